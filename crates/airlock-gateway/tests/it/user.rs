//! Settings validation and SSH key management over HTTP.

use crate::harness::{Gateway, client, login, within};

async fn patch(gw: &Gateway, cookie: &str, body: serde_json::Value) -> reqwest::Response {
    client()
        .patch(gw.url("/func/user/settings"))
        .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preferred_ssh_port_validation() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let r = patch(&gw, &cookie, serde_json::json!({"ssh_port": 10022})).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["settings"]["ssh_port"], 10022);
        assert!(v.get("warnings").is_none());
        for bad in [
            serde_json::json!(80),
            serde_json::json!(1024),
            serde_json::json!(65535),
            serde_json::json!("abc"),
            serde_json::json!(-5),
            serde_json::json!(true),
        ] {
            let r = patch(&gw, &cookie, serde_json::json!({"ssh_port": bad})).await;
            assert_eq!(r.status(), 400, "{bad}");
            let p: serde_json::Value = r.json().await.unwrap();
            assert_eq!(p["type"], "https://api.backend.ai/probs/invalid-api-params");
            assert!(p["msg"].is_string());
        }
        let r = patch(&gw, &cookie, serde_json::json!({"ssh_port": 80})).await;
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(p["hint"].as_str().unwrap().contains("10000"), "{p}");
        // The failed updates left the value alone.
        let s: serde_json::Value = gw
            .get_json("/user/settings", format!("AIOHTTP_SESSION={cookie}"))
            .await;
        assert_eq!(s["ssh_port"], 10022);
        // Accepted but outside the recommended range: a warning.
        let v: serde_json::Value = patch(&gw, &cookie, serde_json::json!({"ssh_port": "2222"}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["settings"]["ssh_port"], 2222);
        assert!(v["warnings"][0].as_str().unwrap().contains("recommended"));
        // 0, "" and null clear it.
        for clear in [
            serde_json::json!(0),
            serde_json::json!(""),
            serde_json::Value::Null,
        ] {
            patch(&gw, &cookie, serde_json::json!({"ssh_port": 10022})).await;
            let v: serde_json::Value = patch(&gw, &cookie, serde_json::json!({"ssh_port": clear}))
                .await
                .json()
                .await
                .unwrap();
            assert!(v["settings"]["ssh_port"].is_null(), "{clear}");
        }
        // Settings are per user.
        let admin = login(&gw, &gw.admin.email, &gw.admin.password).await;
        patch(&gw, &cookie, serde_json::json!({"ssh_port": 10022})).await;
        let s: serde_json::Value = gw
            .get_json("/user/settings", format!("AIOHTTP_SESSION={admin}"))
            .await;
        assert!(s["ssh_port"].is_null());
    })
    .await;
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGDGCepR3g7zolW5aQ2fg/uizIPWnjMnm53e8FOcNb1 me@laptop";

#[tokio::test]
async fn ssh_keys_add_list_remove() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let c = client();
        let auth = format!("AIOHTTP_SESSION={cookie}");
        let r = c
            .post(gw.url("/user/ssh-keys"))
            .header("Cookie", &auth)
            .json(&serde_json::json!({"public_key": KEY}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let k: serde_json::Value = r.json().await.unwrap();
        assert_eq!(k["name"], "me@laptop");
        assert_eq!(k["algorithm"], "ssh-ed25519");
        let fp = k["fingerprint"].as_str().unwrap().to_owned();
        assert!(fp.starts_with("SHA256:"));
        // Duplicate: 409.
        let r = c
            .post(gw.url("/user/ssh-keys"))
            .header("Cookie", &auth)
            .json(&serde_json::json!({"public_key": KEY, "name": "again"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        // Malformed keys: 400 with a message and a hint.
        for bad in [
            "",
            "ssh-ed25519 AAAA",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc",
            "hello",
        ] {
            let r = c
                .post(gw.url("/user/ssh-keys"))
                .header("Cookie", &auth)
                .json(&serde_json::json!({"public_key": bad}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad:?}");
            let p: serde_json::Value = r.json().await.unwrap();
            assert!(p["msg"].is_string() && p["hint"].is_string(), "{p}");
        }
        let list: Vec<serde_json::Value> = gw.get_json("/user/ssh-keys", &auth).await;
        assert_eq!(list.len(), 1);
        // Another user does not see or remove it.
        let other = login(&gw, &gw.admin.email, &gw.admin.password).await;
        let list: Vec<serde_json::Value> = gw
            .get_json("/user/ssh-keys", format!("AIOHTTP_SESSION={other}"))
            .await;
        assert!(list.is_empty());
        let r = c
            .delete(gw.url(&format!("/user/ssh-keys/{}", k["id"].as_str().unwrap())))
            .header("Cookie", format!("AIOHTTP_SESSION={other}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // Removal by fingerprint.
        let enc = fp.replace('+', "%2B").replace('/', "%2F");
        let r = c
            .delete(gw.url(&format!("/user/ssh-keys/{enc}")))
            .header("Cookie", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let list: Vec<serde_json::Value> = gw.get_json("/user/ssh-keys", &auth).await;
        assert!(list.is_empty());
    })
    .await;
}
