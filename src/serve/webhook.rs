//! GitHub and GitLab push webhooks: verifying that they come from the forge,
//! and reading the push out of them.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What a push event says, as far as a deploy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub branch: String,
    pub commit: String,
    pub author: String,
    pub message: String,
    pub pusher: String,
}

/// Why a webhook request starts no deploy.
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not a push (a ping, an issue event, ...).
    NotAPush(String),
    /// A push that deletes a branch, or pushes a tag.
    NoBranchHead,
}

/// GitHub: `X-Hub-Signature-256: sha256=HEX` is the HMAC-SHA256 of the body
/// under the shared secret. Compared in constant time.
pub fn github_signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// GitLab: `X-Gitlab-Token` is the secret token itself. Compared in constant time.
pub fn gitlab_token_ok(token: &[u8], header: Option<&str>) -> bool {
    header.is_some_and(|given| constant_time_eq(given.as_bytes(), token))
}

/// Equal bytes, in a time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn branch_of(reference: &str) -> Option<String> {
    reference.strip_prefix("refs/heads/").map(str::to_string)
}

fn text(value: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A GitHub event (`X-GitHub-Event`) as a push.
pub fn github_push(event: &str, body: &Value) -> Result<Push, Ignored> {
    if event != "push" {
        return Err(Ignored::NotAPush(event.to_string()));
    }
    let branch = branch_of(&text(body, &["ref"])).ok_or(Ignored::NoBranchHead)?;
    let commit = text(body, &["after"]);
    if body.get("deleted").and_then(Value::as_bool) == Some(true) || is_null_commit(&commit) {
        return Err(Ignored::NoBranchHead);
    }
    Ok(Push {
        branch,
        author: text(body, &["head_commit", "author", "name"]),
        message: text(body, &["head_commit", "message"]),
        pusher: text(body, &["pusher", "name"]),
        commit,
    })
}

/// A GitLab event (`X-Gitlab-Event`) as a push.
pub fn gitlab_push(event: &str, body: &Value) -> Result<Push, Ignored> {
    if event != "Push Hook" {
        return Err(Ignored::NotAPush(event.to_string()));
    }
    let branch = branch_of(&text(body, &["ref"])).ok_or(Ignored::NoBranchHead)?;
    let commit = match body.get("checkout_sha").and_then(Value::as_str) {
        Some(sha) => sha.to_string(),
        None => text(body, &["after"]),
    };
    if is_null_commit(&commit) {
        return Err(Ignored::NoBranchHead);
    }
    let head = body
        .get("commits")
        .and_then(Value::as_array)
        .and_then(|commits| {
            commits
                .iter()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(commit.as_str()))
                .or(commits.last())
        })
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Push {
        branch,
        author: text(&head, &["author", "name"]),
        message: text(&head, &["message"]),
        pusher: text(body, &["user_username"]),
        commit,
    })
}

fn is_null_commit(commit: &str) -> bool {
    commit.is_empty() || commit.bytes().all(|b| b == b'0')
}

/// A commit id as git prints it (hex, 7 to 64 characters): nothing else is
/// ever passed to git from a webhook.
pub fn is_commit_id(text: &str) -> bool {
    (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        assert!(github_signature_ok(b"s3cret", body, Some(&good)));
        assert!(!github_signature_ok(b"other", body, Some(&good)));
        assert!(!github_signature_ok(b"s3cret", b"{}", Some(&good)));
        assert!(!github_signature_ok(b"s3cret", body, None));
        assert!(!github_signature_ok(b"s3cret", body, Some("sha1=abc")));
        assert!(!github_signature_ok(b"s3cret", body, Some("sha256=zz")));
        assert!(gitlab_token_ok(b"tok", Some("tok")));
        assert!(!gitlab_token_ok(b"tok", Some("tok2")));
        assert!(!gitlab_token_ok(b"tok", None));
    }

    #[test]
    fn github_pushes() {
        let body = json!({
            "ref": "refs/heads/main", "after": "a1b2c3d4e5f6", "deleted": false,
            "head_commit": {"message": "fix [deploy]", "author": {"name": "Ann"}},
            "pusher": {"name": "ann"}
        });
        let push = github_push("push", &body).unwrap();
        assert_eq!(push.branch, "main");
        assert_eq!(push.commit, "a1b2c3d4e5f6");
        assert_eq!(push.message, "fix [deploy]");
        assert_eq!(push.author, "Ann");
        assert_eq!(
            github_push("ping", &body),
            Err(Ignored::NotAPush("ping".into()))
        );
        let tag = json!({"ref": "refs/tags/v1", "after": "a1b2c3d4e5f6"});
        assert_eq!(github_push("push", &tag), Err(Ignored::NoBranchHead));
        let deleted = json!({"ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000", "deleted": true});
        assert_eq!(github_push("push", &deleted), Err(Ignored::NoBranchHead));
    }

    #[test]
    fn gitlab_pushes() {
        let body = json!({
            "ref": "refs/heads/release/2", "checkout_sha": "bbbbbbbb", "user_username": "bob",
            "commits": [
                {"id": "aaaaaaaa", "message": "one", "author": {"name": "A"}},
                {"id": "bbbbbbbb", "message": "two [deploy]", "author": {"name": "B"}}
            ]
        });
        let push = gitlab_push("Push Hook", &body).unwrap();
        assert_eq!(push.branch, "release/2");
        assert_eq!(push.commit, "bbbbbbbb");
        assert_eq!(push.message, "two [deploy]");
        assert_eq!(push.author, "B");
        assert_eq!(push.pusher, "bob");
        assert!(gitlab_push("Tag Push Hook", &body).is_err());
        assert!(is_commit_id("bbbbbbbb"));
        assert!(!is_commit_id("--upload-pack=x"));
    }
}
