//! Upload forms, shared by the folder page and the session files page:
//! `multipart/form-data` with the `csrf` field first, then `file` parts.
//! Nothing is written before the token is checked; each file is streamed
//! to its writer within the account's upload limit; and a refused upload
//! reads the rest of what the browser sends (for a while), so the browser
//! gets the answer instead of a reset connection.

use axum::body::Body;
use http::{HeaderMap, StatusCode, header};

use super::layout;
use axum::response::Response;

use super::{Flash, PageError, PageResult, WebUser, check_csrf, explain, redirect_for};
use crate::AppState;
use crate::error::ApiError;
use crate::quotas;

/// One file of the form, as its writer reads it.
pub(super) type FilePart = quotas::UploadPart;

/// An upload form whose token has been checked.
pub(super) struct UploadForm {
    multipart: multer::Multipart<'static>,
}

impl UploadForm {
    /// Reads the form up to its `csrf` field and checks it. The outer error
    /// is the refusal page (no form, bad token); the inner one a body that
    /// broke off before the token.
    pub(super) async fn open(
        headers: &HeaderMap,
        body: Body,
        user: &WebUser,
    ) -> PageResult<Result<UploadForm, ApiError>> {
        let boundary = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| multer::parse_boundary(ct).ok())
            .ok_or_else(|| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    "Upload failed",
                    "The upload must be sent by the upload form.",
                )
            })?;
        let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
        loop {
            match multipart.next_field().await {
                Ok(Some(f)) if f.name() == Some("csrf") => {
                    check_csrf(user, &f.text().await.unwrap_or_default())?;
                    return Ok(Ok(UploadForm { multipart }));
                }
                // A file before the token, or no token at all: refused.
                Ok(Some(f)) if f.name() == Some("file") => check_csrf(user, "")?,
                Ok(Some(_)) => {}
                Ok(None) => check_csrf(user, "")?,
                Err(e) => return Ok(Err(interrupted(&e))),
            }
        }
    }

    /// Streams each `file` part through `put` (its base name, its body cut
    /// off past the account's upload limit); the names and sizes written.
    /// An empty file input is skipped; a form without files is an error.
    pub(super) async fn each_file<F, Fut>(
        &mut self,
        state: &AppState,
        user_id: &str,
        put: F,
    ) -> Result<Vec<(String, u64)>, ApiError>
    where
        F: FnMut(String, FilePart) -> Fut,
        Fut: Future<Output = Result<u64, ApiError>>,
    {
        let names = quotas::each_upload_part(
            &mut self.multipart,
            "file",
            state,
            user_id,
            |part| upload_name(part.file_name().unwrap_or_default()).map_err(ApiError::invalid),
            put,
        )
        .await?;
        if names.is_empty() {
            return Err(ApiError::invalid("choose one or more files to upload"));
        }
        Ok(names)
    }
}

fn interrupted(e: &multer::Error) -> ApiError {
    ApiError::invalid(format!("the upload was interrupted ({e})"))
}

/// The base name of an uploaded file part (browsers send a base name;
/// older ones a full local path); `None` for an empty file input.
fn upload_name(raw: &str) -> Result<Option<String>, String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if name.is_empty() {
        if raw.is_empty() {
            return Ok(None);
        }
        return Err(format!("{raw:?} is not a file name."));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name."));
    }
    Ok(Some(name.to_owned()))
}

/// The answer to a refused upload: back to `back` with the reason.
pub(super) fn failed(script: bool, back: &str, e: &ApiError) -> Response {
    let (m, _) = explain(e);
    redirect_for(script, back, &[Flash::error(format!("Upload failed: {m}"))])
}

/// The flash after a successful upload of `names` (name, size).
pub(super) fn uploaded(names: &[(String, u64)]) -> String {
    match names {
        [(name, n)] => format!("Uploaded {name} ({}).", layout::size(*n)),
        _ => format!("Uploaded {} files.", names.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names() {
        assert_eq!(
            upload_name("C:\\Users\\me\\a.txt"),
            Ok(Some("a.txt".into()))
        );
        assert_eq!(upload_name(""), Ok(None));
        assert!(upload_name("..").is_err());
        assert!(upload_name("dir/").is_err());
    }
}
