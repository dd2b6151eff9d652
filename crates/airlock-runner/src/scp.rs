//! Built-in legacy scp server (`scp -t` / `scp -f`), for images without scp.
//!
//! Runs as its own process (the runner invoked with argv[0] `scp`) with the
//! protocol on stdin/stdout, like OpenSSH's scp in server mode.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

/// Options of a server-side scp invocation.
#[derive(Debug, Default, Clone)]
pub struct ScpArgs {
    /// `-t`: receive files.
    pub to: bool,
    /// `-f`: send files.
    pub from: bool,
    /// `-r`.
    pub recursive: bool,
    /// `-p`: preserve times and modes.
    pub preserve: bool,
    /// `-d`: target must be a directory.
    pub target_dir: bool,
    /// Paths.
    pub paths: Vec<String>,
}

/// Parse scp server arguments (after argv[0]).
pub fn parse_args(args: &[String]) -> Result<ScpArgs, String> {
    let mut a = ScpArgs::default();
    let it = args.iter();
    let mut opts_done = false;
    for s in it {
        if !opts_done && s == "--" {
            opts_done = true;
            continue;
        }
        if !opts_done && s.starts_with('-') && s.len() > 1 {
            for c in s[1..].chars() {
                match c {
                    't' => a.to = true,
                    'f' => a.from = true,
                    'r' => a.recursive = true,
                    'p' => a.preserve = true,
                    'd' => a.target_dir = true,
                    'v' | 'q' | 'O' | 'T' | 'A' | '3' | '4' | '6' | 'C' | 'B' => {}
                    other => return Err(format!("unsupported option -{other}")),
                }
            }
            continue;
        }
        a.paths.push(s.clone());
    }
    if a.to == a.from {
        return Err("exactly one of -t or -f is required (server mode only)".into());
    }
    if a.paths.is_empty() {
        return Err("no path given".into());
    }
    Ok(a)
}

fn expand_tilde(p: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (p, home) {
        ("~", Some(h)) => h,
        (s, Some(h)) if s.starts_with("~/") => h.join(&s[2..]),
        (s, _) => PathBuf::from(s),
    }
}

/// Run the scp server on stdin/stdout; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "\x02scp: {e}");
            let _ = out.flush();
            eprintln!("scp: {e}");
            return 1;
        }
    };
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(256 * 1024, stdin.lock());
    let mut output = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let r = if a.to {
        sink(&a, &mut input, &mut output)
    } else {
        source(&a, &mut input, &mut output)
    };
    let _ = output.flush();
    match r {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("scp: {e}");
            1
        }
    }
}

type IoResult<T> = std::io::Result<T>;

fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

fn send_err<W: Write>(out: &mut W, msg: &str, errors: &mut u32) -> IoResult<()> {
    *errors += 1;
    writeln!(out, "\x01scp: {msg}")?;
    out.flush()
}

fn read_line<R: BufRead>(r: &mut R) -> IoResult<Option<String>> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Receive files (`scp -t target`).
pub fn sink<R: BufRead, W: Write>(a: &ScpArgs, input: &mut R, out: &mut W) -> IoResult<u32> {
    let target = expand_tilde(&a.paths[0]);
    let mut errors = 0u32;
    if a.target_dir && !target.is_dir() {
        send_err(
            out,
            &format!("{}: Not a directory", target.display()),
            &mut errors,
        )?;
        return Ok(errors);
    }
    // Directory stack: where entries go.
    let mut stack: Vec<PathBuf> = Vec::new();
    let mut times: Option<(i64, i64)> = None;
    let mut dir_times: Vec<Option<(i64, i64)>> = Vec::new();
    out.write_all(b"\0")?;
    out.flush()?;
    while let Some(line) = read_line(input)? {
        let Some(kind) = line.chars().next() else {
            continue;
        };
        let rest = &line[kind.len_utf8()..];
        match kind {
            '\x01' | '\x02' => {
                eprintln!("{rest}");
                errors += 1;
                if kind == '\x02' {
                    return Ok(errors);
                }
            }
            'T' => {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() != 4 {
                    writeln!(out, "\x02scp: protocol error: bad time line")?;
                    out.flush()?;
                    return Err(other("protocol error: bad time line"));
                }
                let m = f[0].parse().unwrap_or(0);
                let at = f[2].parse().unwrap_or(0);
                times = Some((m, at));
                out.write_all(b"\0")?;
                out.flush()?;
            }
            'E' => {
                if let Some(dir) = stack.pop()
                    && let Some(Some((m, at))) = dir_times.pop()
                {
                    set_times(&dir, m, at);
                }
                out.write_all(b"\0")?;
                out.flush()?;
            }
            'C' | 'D' => {
                let mut f = rest.splitn(3, ' ');
                let (Some(mode), Some(size), Some(name)) = (f.next(), f.next(), f.next()) else {
                    writeln!(out, "\x02scp: protocol error: bad header")?;
                    out.flush()?;
                    return Err(other("protocol error: bad header"));
                };
                let mode = u32::from_str_radix(mode, 8).unwrap_or(0o644) & 0o7777;
                let size: u64 = size.parse().unwrap_or(0);
                if name.contains('/') || name == ".." || name == "." || name.is_empty() {
                    writeln!(out, "\x02scp: protocol error: unexpected filename: {name}")?;
                    out.flush()?;
                    return Err(other("protocol error: bad filename"));
                }
                let dest = match stack.last() {
                    Some(d) => d.join(name),
                    None => {
                        if target.is_dir() {
                            target.join(name)
                        } else {
                            target.clone()
                        }
                    }
                };
                let t = times.take();
                if kind == 'D' {
                    if !a.recursive {
                        send_err(out, "received directory without -r", &mut errors)?;
                        return Ok(errors);
                    }
                    if !dest.is_dir()
                        && let Err(e) = std::fs::DirBuilder::new().mode(mode | 0o700).create(&dest)
                    {
                        send_err(out, &format!("{}: {e}", dest.display()), &mut errors)?;
                        return Ok(errors);
                    }
                    if a.preserve {
                        let _ =
                            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode));
                    }
                    stack.push(dest);
                    dir_times.push(if a.preserve { t } else { None });
                    out.write_all(b"\0")?;
                    out.flush()?;
                    continue;
                }
                // A file.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(mode)
                    .open(&dest);
                let mut file = match file {
                    Ok(f) => Some(f),
                    Err(e) => {
                        send_err(out, &format!("{}: {e}", dest.display()), &mut errors)?;
                        None
                    }
                };
                if file.is_some() {
                    out.write_all(b"\0")?;
                    out.flush()?;
                }
                // Always consume the data (the source sends it after an error too
                // only if we acked; when we refused it skips).
                if file.is_none() {
                    continue;
                }
                let mut left = size;
                let mut buf = vec![0u8; 256 * 1024];
                let mut werr: Option<std::io::Error> = None;
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    input.read_exact(&mut buf[..n])?;
                    if werr.is_none()
                        && let Some(f) = file.as_mut()
                        && let Err(e) = f.write_all(&buf[..n])
                    {
                        werr = Some(e);
                    }
                    left -= n as u64;
                }
                if let Some(f) = file.as_ref()
                    && werr.is_none()
                {
                    if let Err(e) = f.set_len(size) {
                        werr = Some(e);
                    }
                    if a.preserve {
                        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
                    }
                }
                drop(file);
                if a.preserve
                    && let Some((m, at)) = t
                {
                    set_times(&dest, m, at);
                }
                // The source's status byte after the data.
                let mut st = [0u8; 1];
                input.read_exact(&mut st)?;
                if st[0] != 0 {
                    let msg = read_line(input)?.unwrap_or_default();
                    eprintln!("{msg}");
                    errors += 1;
                }
                match werr {
                    Some(e) => send_err(out, &format!("{}: {e}", dest.display()), &mut errors)?,
                    None => {
                        out.write_all(b"\0")?;
                        out.flush()?;
                    }
                }
            }
            _ => {
                writeln!(
                    out,
                    "\x02scp: protocol error: unexpected <{}>",
                    kind.escape_default()
                )?;
                out.flush()?;
                return Err(other("protocol error"));
            }
        }
    }
    Ok(errors)
}

fn set_times(p: &Path, mtime: i64, atime: i64) {
    let at = nix::sys::time::TimeVal::new(atime, 0);
    let mt = nix::sys::time::TimeVal::new(mtime, 0);
    let _ = nix::sys::stat::utimes(p, &at, &mt);
}

fn read_ack<R: BufRead>(input: &mut R, errors: &mut u32) -> IoResult<bool> {
    let mut b = [0u8; 1];
    input.read_exact(&mut b)?;
    match b[0] {
        0 => Ok(true),
        1 | 2 => {
            let msg = read_line(input)?.unwrap_or_default();
            eprintln!("{msg}");
            *errors += 1;
            if b[0] == 2 {
                return Err(other(msg));
            }
            Ok(false)
        }
        x => Err(other(format!("protocol error: bad ack {x}"))),
    }
}

/// Send files (`scp -f paths…`).
pub fn source<R: BufRead, W: Write>(a: &ScpArgs, input: &mut R, out: &mut W) -> IoResult<u32> {
    let mut errors = 0u32;
    // Wait for the sink's initial ready byte.
    if !read_ack(input, &mut errors)? {
        return Ok(errors);
    }
    for p in &a.paths {
        let path = expand_tilde(p);
        send_path(a, &path, input, out, &mut errors)?;
    }
    Ok(errors)
}

fn send_path<R: BufRead, W: Write>(
    a: &ScpArgs,
    path: &Path,
    input: &mut R,
    out: &mut W,
    errors: &mut u32,
) -> IoResult<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return send_err(out, &format!("{}: {e}", path.display()), errors),
    };
    if a.preserve {
        writeln!(out, "T{} 0 {} 0", meta.mtime(), meta.atime())?;
        out.flush()?;
        if !read_ack(input, errors)? {
            return Ok(());
        }
    }
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() {
        if !a.recursive {
            return send_err(
                out,
                &format!("{}: not a regular file", path.display()),
                errors,
            );
        }
        writeln!(out, "D{mode:04o} 0 {name}")?;
        out.flush()?;
        if !read_ack(input, errors)? {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                send_err(out, &format!("{}: {e}", path.display()), errors)?;
                Vec::new()
            }
        };
        entries.sort();
        for e in entries {
            send_path(a, &e, input, out, errors)?;
        }
        out.write_all(b"E\n")?;
        out.flush()?;
        read_ack(input, errors)?;
        return Ok(());
    }
    if !meta.is_file() {
        return send_err(
            out,
            &format!("{}: not a regular file", path.display()),
            errors,
        );
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return send_err(out, &format!("{}: {e}", path.display()), errors),
    };
    let size = meta.len();
    writeln!(out, "C{mode:04o} {size} {name}")?;
    out.flush()?;
    if !read_ack(input, errors)? {
        return Ok(());
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    let mut rerr: Option<std::io::Error> = None;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        if rerr.is_none() {
            if let Err(e) = f.read_exact(&mut buf[..n]) {
                rerr = Some(e);
                buf[..n].fill(0);
            }
        } else {
            buf[..n].fill(0);
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    match rerr {
        None => out.write_all(b"\0")?,
        Some(e) => {
            *errors += 1;
            writeln!(out, "\x01scp: {}: {e}", path.display())?;
        }
    }
    out.flush()?;
    read_ack(input, errors)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args() {
        let a = parse_args(&s(&["-v", "-r", "-p", "-d", "-t", "--", "/x"])).unwrap();
        assert!(a.to && a.recursive && a.preserve && a.target_dir);
        assert_eq!(a.paths, vec!["/x"]);
        assert!(parse_args(&s(&["/x"])).is_err());
    }

    #[test]
    fn roundtrip_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::create_dir(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
        // source -> bytes (acks pre-supplied: initial + T/D/… all zero)
        let a = parse_args(&s(&["-r", "-p", "-f", src.to_str().unwrap()])).unwrap();
        let acks = vec![0u8; 64];
        let mut out = Vec::new();
        let e = source(&a, &mut std::io::Cursor::new(acks), &mut out).unwrap();
        assert_eq!(e, 0);
        // bytes -> sink
        let dst = dir.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let a = parse_args(&s(&["-r", "-p", "-t", dst.to_str().unwrap()])).unwrap();
        let mut replies = Vec::new();
        let e = sink(&a, &mut std::io::Cursor::new(out), &mut replies).unwrap();
        assert_eq!(e, 0);
        assert_eq!(std::fs::read(dst.join("src/a.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(dst.join("src/sub/b.bin")).unwrap().len(),
            300_000
        );
        assert!(replies.iter().all(|b| *b == 0));
    }
}
