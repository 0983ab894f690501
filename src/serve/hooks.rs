//! The webhook endpoints: verify, answer each delivery once, refuse pushes
//! that would ship an older commit, queue a job per matching trigger, and
//! record every request with its answer (the deliveries page).

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::db::{self, NewJob};
use super::web::{valid_branch, Inner, State};
use super::webhook::{self, Ignored, Push};
use super::TriggerSpec;

/// The forge a webhook comes from: how it is verified and read.
#[derive(Clone, Copy)]
enum Forge {
    GitHub,
    GitLab,
}

pub async fn github(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Forge::GitHub, &headers, &body).await
}

pub async fn gitlab(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Forge::GitLab, &headers, &body).await
}

/// An answer: its status, a reason for people, and JSON for the forge's log.
struct Answer {
    status: StatusCode,
    text: String,
    body: Value,
}

impl Answer {
    fn new(status: StatusCode, text: impl Into<String>) -> Answer {
        let text = text.into();
        Answer {
            status,
            body: json!({ "answer": text }),
            text,
        }
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a webhook before reading anything of it, answers a delivery id
/// once, then queues its push; every request is recorded with its answer.
async fn receive(state: &Inner, forge: Forge, headers: &HeaderMap, body: &[u8]) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "60")],
            "es serve is stopping: send this again in a minute",
        )
            .into_response();
    }
    let (source, delivery_header) = match forge {
        Forge::GitHub => ("github", "x-github-delivery"),
        Forge::GitLab => ("gitlab", "x-gitlab-event-uuid"),
    };
    let verified = verify(state, forge, headers, body);
    let delivery = header_text(headers, delivery_header).filter(|_| verified.is_ok());
    let row = match state.db.claim_delivery(source, delivery) {
        Ok(row) => row,
        Err(err) => return super::web::internal(err),
    };
    let (row, answer, push) = match row {
        None => {
            // A replay: answered once already; recorded again, without its id.
            let row = state.db.claim_delivery(source, None).ok().flatten();
            let text = format!("already seen: delivery {}", delivery.unwrap_or(""));
            (row, Answer::new(StatusCode::OK, text), None)
        }
        Some(row) => {
            let (answer, push) = match verified {
                Err(answer) => (answer, None),
                Ok(()) => read_push(state, forge, headers, body).await,
            };
            (Some(row), answer, push)
        }
    };
    if let Some(row) = row {
        let push = push
            .as_ref()
            .map(|p| (p.branch.as_str(), p.commit.as_str()));
        let status = answer.status.as_u16();
        if let Err(err) = state.db.answer_delivery(row, status, &answer.text, push) {
            eprintln!("es serve: recording a delivery: {err:#}");
        }
    }
    eprintln!("es serve: {source} webhook: {}", answer.text);
    let reason = [("X-Es-Reason", header_safe(&answer.text))];
    if answer.status == StatusCode::NO_CONTENT {
        return (answer.status, reason).into_response();
    }
    (answer.status, reason, Json(answer.body)).into_response()
}

/// Text that fits in a header value.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn verify(state: &Inner, forge: Forge, headers: &HeaderMap, body: &[u8]) -> Result<(), Answer> {
    let settings = &state.settings;
    let (secret, key) = match forge {
        Forge::GitHub => (&settings.github_secret, "serve.github_secret"),
        Forge::GitLab => (&settings.gitlab_token, "serve.gitlab_token"),
    };
    let Some(secret) = secret else {
        return Err(Answer::new(
            StatusCode::UNAUTHORIZED,
            format!("refused: {key} is not set"),
        ));
    };
    let verified = match forge {
        Forge::GitHub => webhook::github_signature_ok(
            secret.as_bytes(),
            body,
            header_text(headers, "x-hub-signature-256"),
        ),
        Forge::GitLab => {
            webhook::gitlab_token_ok(secret.as_bytes(), header_text(headers, "x-gitlab-token"))
        }
    };
    if verified {
        Ok(())
    } else {
        Err(Answer::new(
            StatusCode::UNAUTHORIZED,
            "refused: bad or missing signature",
        ))
    }
}

async fn read_push(
    state: &Inner,
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
) -> (Answer, Option<Push>) {
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return (
            Answer::new(StatusCode::BAD_REQUEST, "refused: the body is not JSON"),
            None,
        );
    };
    let (source, event_header) = match forge {
        Forge::GitHub => ("github", "x-github-event"),
        Forge::GitLab => ("gitlab", "x-gitlab-event"),
    };
    let event = header_text(headers, event_header).unwrap_or("");
    let push = match forge {
        Forge::GitHub => webhook::github_push(event, &payload),
        Forge::GitLab => webhook::gitlab_push(event, &payload),
    };
    match push {
        Ok(push) => (queue_push(state, source, &push).await, Some(push)),
        Err(what) => {
            let reason = match what {
                Ignored::NotAPush(event) => format!("ignored: not a push event ({event})"),
                Ignored::NoBranchHead => "ignored: a tag or a deleted branch".to_string(),
            };
            (Answer::new(StatusCode::NO_CONTENT, reason), None)
        }
    }
}

/// Queues a job for every trigger the push matches and may ship it.
async fn queue_push(state: &Inner, source: &str, push: &Push) -> Answer {
    if !valid_branch(&push.branch) || !webhook::is_commit_id(&push.commit) {
        return Answer::new(
            StatusCode::BAD_REQUEST,
            "refused: not a branch and commit id",
        );
    }
    let commit = push.commit.to_lowercase();
    let mut queued = Vec::new();
    let mut skipped = Vec::new();
    for trigger in &state.settings.triggers {
        if !trigger.matches_branch(&push.branch) {
            continue;
        }
        if !trigger.matches_message(&push.message) {
            skipped.push(format!(
                "ignored: {}: the commit message does not contain {:?}",
                trigger.name,
                trigger.message_filter.as_deref().unwrap_or("")
            ));
            continue;
        }
        if let Some(why) = older_than_deployed(state, trigger, &push.branch, &commit).await {
            skipped.push(format!("refused: {}: {why}", trigger.name));
            continue;
        }
        let job = NewJob {
            trigger: trigger.name.clone(),
            key: trigger.key(),
            source: source.into(),
            requested_by: (!push.pusher.is_empty()).then(|| push.pusher.clone()),
            commit: Some(commit.clone()),
            branch: push.branch.clone(),
            author: Some(push.author.clone()),
            message: Some(push.message.clone()),
            version: None,
            not_before: db::now() + state.settings.quiet_period,
        };
        match state.queue.submit(job) {
            Ok((id, coalesced)) => queued.push((id, trigger.name.clone(), coalesced)),
            Err(err) => {
                eprintln!("es serve: queueing: {err:#}");
                return Answer::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the job could not be queued",
                );
            }
        }
    }
    if queued.is_empty() {
        let refused = skipped.iter().any(|s| s.starts_with("refused"));
        let text = if skipped.is_empty() {
            format!("ignored: no trigger deploys branch {}", push.branch)
        } else {
            skipped.join("; ")
        };
        let status = if refused {
            StatusCode::CONFLICT
        } else {
            StatusCode::NO_CONTENT
        };
        return Answer::new(status, text);
    }
    let mut text = queued
        .iter()
        .map(|(id, name, coalesced)| {
            let how = if *coalesced {
                "coalesced into"
            } else {
                "queued"
            };
            format!("{how} job {id} ({name})")
        })
        .collect::<Vec<_>>()
        .join("; ");
    for s in &skipped {
        text.push_str("; ");
        text.push_str(s);
    }
    let ids: Vec<Value> = queued
        .iter()
        .map(|(id, name, coalesced)| json!({"id": id, "trigger": name, "coalesced": coalesced}))
        .collect();
    Answer {
        status: StatusCode::ACCEPTED,
        body: json!({"queued": ids, "answer": text}),
        text,
    }
}

/// Why a pushed commit would ship something older than what `trigger` last
/// deployed from the branch: it is that commit, or one of its ancestors. (A
/// commit the server has not fetched yet is checked again when its job runs.)
async fn older_than_deployed(
    state: &Inner,
    trigger: &TriggerSpec,
    branch: &str,
    commit: &str,
) -> Option<String> {
    let (job, last) = state
        .db
        .last_deployed(&trigger.key(), branch, i64::MAX)
        .ok()??;
    if last == commit {
        return Some(format!("commit {commit} is already deployed (job {job})"));
    }
    if trigger.allow_force_push {
        return None;
    }
    let repo = state.settings.state_dir.join("repo.git");
    let older = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["merge-base", "--is-ancestor", commit, &last])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    older.then(|| format!("commit {commit} is older than {last}, which job {job} deployed"))
}
