//! The audit trail through the API and the web UI (no Docker): account and
//! folder events with client address and connection id; each user reads
//! only their own; administrators read everyone's, in the API and at
//! `/ui/admin/events`; the settings page lists the user's own.

use serde_json::Value;

use crate::harness::{Gateway, client, cookie_header, login, within};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGDGCepR3g7zolW5aQ2fg/uizIPWnjMnm53e8FOcNb1 me@laptop";

fn kinds(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn html(gw: &Gateway, path: &str, cookie: &str) -> (u16, String) {
    let r = client()
        .get(gw.url(path))
        .header("Cookie", cookie_header(cookie))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn account_and_folder_events_each_user_sees_only_their_own() {
    within(async {
        let gw = Gateway::start().await;
        let c = client();
        // A wrong password, then a login.
        let r = c
            .post(gw.url("/server/login"))
            .json(&serde_json::json!({"username": gw.user.email, "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let user = login(&gw, &gw.user.email, &gw.user.password).await;
        let uc = cookie_header(&user);
        let send = |m: reqwest::Method, path: &str| {
            c.request(m, gw.url(path)).header("Cookie", uc.clone())
        };
        let r = send(reqwest::Method::POST, "/user/ssh-keys")
            .json(&serde_json::json!({"public_key": KEY, "name": "laptop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = send(reqwest::Method::DELETE, "/user/ssh-keys/laptop")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = send(reqwest::Method::POST, "/user/keypair")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let secret = r.json::<Value>().await.unwrap()["secret_key"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = send(reqwest::Method::DELETE, "/user/keypair")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Folder files: upload 5000 bytes, download, delete.
        let r = send(reqwest::Method::POST, "/folders")
            .json(&serde_json::json!({"name": "data"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = send(reqwest::Method::PUT, "/folders/data/file?path=d%20x.bin")
            .body(vec![7u8; 5000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = send(reqwest::Method::GET, "/folders/data/file?path=d%20x.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 5000);
        let r = send(reqwest::Method::DELETE, "/folders/data/file?path=d%20x.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);

        let mine: Value = gw.get_json("/user/events", &uc).await;
        assert_eq!(
            kinds(&mine),
            [
                "login.failed",
                "login.ok",
                "sshkey.added",
                "sshkey.removed",
                "keypair.created",
                "keypair.revoked",
                "folder.upload",
                "folder.download",
                "folder.delete",
            ]
        );
        let evs = mine["events"].as_array().unwrap();
        assert_eq!(evs[0]["detail"]["reason"], "wrong-password");
        for e in evs {
            assert_eq!(e["user"], gw.user.email, "{e}");
            assert_eq!(e["client"], "127.0.0.1", "{e}");
            assert!(e["conn"].as_str().unwrap().starts_with('c'), "{e}");
        }
        assert_eq!(evs[2]["detail"]["name"], "laptop");
        assert!(
            evs[2]["detail"]["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("SHA256:")
        );
        assert_eq!(evs[6]["detail"]["path"], "d x.bin");
        assert_eq!(evs[6]["detail"]["size"], 5000);
        assert_eq!(evs[7]["detail"]["size"], 5000);
        // No secret ever enters the trail.
        assert!(!mine.to_string().contains(&secret));
        assert!(!mine.to_string().contains(&gw.user.password));

        // The admin sees the user's events; the user sees nothing of the
        // admin's, whatever they ask for.
        let admin = login(&gw, &gw.admin.email, &gw.admin.password).await;
        let ac = cookie_header(&admin);
        let theirs: Value = gw
            .get_json(&format!("/admin/events?user={}", gw.user.email), &ac)
            .await;
        assert_eq!(kinds(&theirs), kinds(&mine));
        let all: Value = gw.get_json("/admin/events?since=1h", &ac).await;
        assert!(kinds(&all).len() > kinds(&mine).len());
        let r = c
            .get(gw.url("/admin/events"))
            .header("Cookie", &uc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let asked: Value = gw
            .get_json(&format!("/user/events?user={}", gw.admin.email), &uc)
            .await;
        assert_eq!(kinds(&asked), kinds(&mine));
        let r = c
            .get(gw.url("/admin/events?since=tomorrow"))
            .header("Cookie", &ac)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        // The web UI: the admin page with filters, the user's own card.
        let (status, page) = html(
            &gw,
            &format!("/ui/admin/events?user={}&since=1h&live=1", gw.user.email),
            &admin,
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("sshkey.added") && page.contains("folder.upload"));
        assert!(!page.contains(&format!("<td>{}</td>", gw.admin.email)));
        let (status, _) = html(&gw, "/ui/admin/events", &user).await;
        assert_eq!(status, 403);
        let (status, page) = html(&gw, "/ui/settings", &user).await;
        assert_eq!(status, 200);
        assert!(page.contains("Recent activity") && page.contains("keypair.revoked"));
        assert!(!page.contains(&gw.admin.email));

        // Logging out is recorded too.
        let r = c
            .post(gw.url("/server/logout"))
            .header("Cookie", &uc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let theirs: Value = gw
            .get_json(&format!("/admin/events?user={}", gw.user.email), &ac)
            .await;
        assert_eq!(kinds(&theirs).last().unwrap(), "logout");
    })
    .await;
}

#[tokio::test]
async fn cluster_view_and_disabling_a_user_are_admin_only_and_audited() {
    within(async {
        let gw = Gateway::start().await;
        let c = client();
        let admin = cookie_header(&login(&gw, &gw.admin.email, &gw.admin.password).await);
        let user = cookie_header(&login(&gw, &gw.user.email, &gw.user.password).await);
        let cluster: Value = gw.get_json("/admin/cluster", &admin).await;
        for k in ["agents", "sessions", "tunnels"] {
            assert!(cluster[k].is_array(), "{cluster}");
        }
        let post = |path: &str, cookie: &str| {
            c.post(gw.url(path))
                .header("Cookie", cookie.to_owned())
                .send()
        };
        let r = c
            .get(gw.url("/admin/cluster"))
            .header("Cookie", &user)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = post(&format!("/admin/users/{}/disable", gw.admin.email), &user)
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = post(&format!("/admin/users/{}/disable", gw.admin.email), &admin)
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "an admin cannot lock themselves out");
        let r = post(&format!("/admin/users/{}/disable", gw.user.email), &admin)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Disabled at once: the user's cookie no longer works.
        let r = c
            .get(gw.url("/user/events"))
            .header("Cookie", &user)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = post(&format!("/admin/users/{}/enable", gw.user.email), &admin)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let evs: Value = gw
            .get_json(&format!("/admin/events?user={}", gw.user.email), &admin)
            .await;
        let k = kinds(&evs);
        assert_eq!(k[k.len() - 2..], ["user.disabled", "user.enabled"]);
        assert_eq!(evs["events"][k.len() - 2]["detail"]["by"], gw.admin.email);
        let admin_cookie = admin.trim_start_matches("AIOHTTP_SESSION=").to_owned();
        let (status, page) = html(&gw, "/ui/admin/cluster", &admin_cookie).await;
        assert_eq!(status, 200);
        assert!(page.contains("Agents") && page.contains("Open tunnels"));
    })
    .await;
}
