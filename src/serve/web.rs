//! The HTTP side of `es serve`: webhooks, the job pages, the JSON API, and
//! who may see and do what.
//!
//! Reading and deploying are separate permissions: `serve.read_token` and
//! users without `deploy = true` may only read; `serve.token` and users with
//! `deploy = true` may also start deploys. API clients send
//! `Authorization: Bearer TOKEN` (or HTTP Basic for users); a browser logs in
//! on `/login` and gets a session cookie (HttpOnly, SameSite=Strict), and
//! every form that changes something carries the session's CSRF token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Form, Path, Query, Request, State as Extract};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use minijinja::{context, Environment};
use serde::Deserialize;
use serde_json::{json, Value};

use super::db::{self, Db, Job, NewJob};
use super::jobs::Queue;
use super::webhook::{self, constant_time_eq, Ignored, Push};
use super::Settings;

/// GitHub sends at most 25 MB.
const BODY_LIMIT: usize = 25 * 1024 * 1024;
/// A browser session lasts this long.
const SESSION_SECONDS: i64 = 12 * 3600;
const COOKIE: &str = "es_session";

pub struct Inner {
    db: Arc<Db>,
    settings: Arc<Settings>,
    queue: Queue,
    sessions: Mutex<HashMap<String, Session>>,
    pages: Environment<'static>,
    project: String,
}

pub type State = Arc<Inner>;

#[derive(Clone)]
struct Session {
    who: String,
    deploy: bool,
    csrf: String,
    expires: i64,
}

/// Who is asking, and what they may do.
#[derive(Clone)]
struct Login {
    who: String,
    deploy: bool,
    /// Set for browser sessions, whose forms must carry it.
    csrf: Option<String>,
}

pub fn new_state(db: Arc<Db>, settings: Arc<Settings>, queue: Queue, project: String) -> State {
    let mut pages = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("pages/layout.html")),
        ("jobs.html", include_str!("pages/jobs.html")),
        ("job.html", include_str!("pages/job.html")),
        ("login.html", include_str!("pages/login.html")),
    ] {
        if let Err(err) = pages.add_template(name, text) {
            // The pages are part of the binary; a broken one is a bug caught by the tests.
            eprintln!("es serve: page {name}: {err}");
        }
    }
    Arc::new(Inner {
        db,
        settings,
        queue,
        sessions: Mutex::new(HashMap::new()),
        pages,
        project,
    })
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/redeploy", post(redeploy))
        .route("/deploy", post(deploy_by_hand))
        .route("/login", get(login_page).post(login_post))
        .route("/logout", post(logout))
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/jobs/{id}/log", get(api_log))
        .route("/api/deploy", post(api_deploy))
        .route("/webhook/github", post(github))
        .route("/webhook/gitlab", post(gitlab))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One line per request: method, path (never the query), status, time.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    eprintln!(
        "es serve: {method} {path} {} {:.1}ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness, no sessions: a token nobody can guess is the only kind.
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Inner {
    fn login(&self, headers: &HeaderMap) -> Option<Login> {
        if let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = auth.strip_prefix("Bearer ") {
                return self.token(token.trim()).map(|(who, deploy)| Login {
                    who,
                    deploy,
                    csrf: None,
                });
            }
            if let Some(basic) = auth.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(basic.trim())
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let (user, password) = text.split_once(':')?;
                return self.user(user, password).map(|(who, deploy)| Login {
                    who,
                    deploy,
                    csrf: None,
                });
            }
        }
        let cookie = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = db::now();
        sessions.retain(|_, s| s.expires > now);
        let session = sessions.get(&cookie)?;
        Some(Login {
            who: session.who.clone(),
            deploy: session.deploy,
            csrf: Some(session.csrf.clone()),
        })
    }

    /// Who a token is and whether it may deploy: serve.token or serve.read_token.
    fn token(&self, token: &str) -> Option<(String, bool)> {
        let matches = |t: &Option<String>| {
            t.as_ref().is_some_and(|t| {
                !token.is_empty() && constant_time_eq(t.as_bytes(), token.as_bytes())
            })
        };
        if matches(&self.settings.token) {
            Some(("token".into(), true))
        } else if matches(&self.settings.read_token) {
            Some(("read token".into(), false))
        } else {
            None
        }
    }

    fn user(&self, name: &str, password: &str) -> Option<(String, bool)> {
        self.settings
            .users
            .iter()
            .find(|u| {
                constant_time_eq(u.name.as_bytes(), name.as_bytes())
                    & constant_time_eq(u.password.as_bytes(), password.as_bytes())
            })
            .map(|u| (u.name.clone(), u.deploy))
    }

    fn render(&self, page: &str, ctx: minijinja::Value) -> Response {
        match self
            .pages
            .get_template(page)
            .and_then(|template| template.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(err) => {
                eprintln!("es serve: rendering {page}: {err:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    fn enqueue(&self, job: NewJob) -> Result<(i64, bool), Box<Response>> {
        self.queue.submit(job).map_err(|err| {
            eprintln!("es serve: queueing: {err:#}");
            Box::new(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the job could not be queued",
                )
                    .into_response(),
            )
        })
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn unauthorized_api() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "log in: Authorization: Bearer TOKEN"})),
    )
        .into_response()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "this login may read, not deploy"})),
    )
        .into_response()
}

fn to_login(next: &str) -> Response {
    Redirect::to(&format!("/login?next={}", percent_encode(next))).into_response()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page's view of a job: what the templates show.
fn job_view(job: &Job) -> Value {
    let mut v = job.to_json();
    v["short_commit"] = json!(job.short_commit());
    v["subject"] = json!(job
        .message
        .as_deref()
        .and_then(|m| m.lines().next())
        .unwrap_or(""));
    v["who"] = json!(job
        .requested_by
        .clone()
        .or_else(|| job.author.clone())
        .unwrap_or_default());
    v["took"] = json!(job.duration().map(|s| format!("{s}s")).unwrap_or_default());
    v["hosts_ok"] = json!(job.hosts.iter().filter(|h| h.ok).count());
    v["hosts_total"] = json!(job.hosts.len());
    v
}

fn internal(err: anyhow::Error) -> Response {
    eprintln!("es serve: {err:#}");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

async fn jobs_page(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    let Some(login) = state.login(&headers) else {
        return to_login("/");
    };
    let jobs = match state.db.list(200) {
        Ok(jobs) => jobs,
        Err(err) => return internal(err),
    };
    let active = jobs.iter().any(Job::is_active);
    let views: Vec<Value> = jobs.iter().map(job_view).collect();
    let triggers: Vec<Value> = state
        .settings
        .triggers
        .iter()
        .map(|t| json!({"name": t.name}))
        .collect();
    state.render(
        "jobs.html",
        context! {
            project => state.project, who => login.who, can_deploy => login.deploy,
            csrf => login.csrf, jobs => views, triggers => triggers, active => active,
        },
    )
}

async fn job_page(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let Some(login) = state.login(&headers) else {
        return to_login(&format!("/jobs/{id}"));
    };
    let job = match state.db.get(id) {
        Ok(Some(job)) => job,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such job").into_response(),
        Err(err) => return internal(err),
    };
    let log = match state.db.log(id, 0) {
        Ok(log) => log,
        Err(err) => return internal(err),
    };
    let last_seq = log.last().map(|(seq, _)| *seq).unwrap_or(0);
    let lines: Vec<String> = log.into_iter().map(|(_, line)| line).collect();
    state.render(
        "job.html",
        context! {
            project => state.project, who => login.who, can_deploy => login.deploy,
            csrf => login.csrf, job => job_view(&job), log => lines, last_seq => last_seq,
            active => job.is_active(),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    failed: Option<String>,
}

async fn login_page(Extract(state): Extract<State>, Query(q): Query<NextQuery>) -> Response {
    state.render(
        "login.html",
        context! { project => state.project, next => q.next, failed => q.failed.is_some() },
    )
}

async fn login_post(Extract(state): Extract<State>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let found = if !token.is_empty() {
        state.token(token)
    } else {
        state.user(&form.user, &form.password)
    };
    // Only a path on this server is a place to go back to.
    let next = if form.next.starts_with('/') && !form.next.starts_with("//") {
        form.next.clone()
    } else {
        "/".to_string()
    };
    let Some((who, deploy)) = found else {
        eprintln!("es serve: a login failed");
        return Redirect::to(&format!("/login?failed=1&next={}", percent_encode(&next)))
            .into_response();
    };
    let id = random_token();
    let csrf = random_token();
    if id.is_empty() || csrf.is_empty() {
        return internal(anyhow::anyhow!("no randomness for a session"));
    }
    state
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            Session {
                who,
                deploy,
                csrf,
                expires: db::now() + SESSION_SECONDS,
            },
        );
    // Behind a TLS proxy (public_url https://...), the cookie never travels in clear.
    let secure = match &state.settings.public_url {
        Some(url) if url.starts_with("https://") => "; Secure",
        _ => "",
    };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}{secure}"
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let (Some(login), Some(id)) = (state.login(&headers), cookie(&headers, COOKIE)) {
        if login.csrf.as_deref() == Some(form.csrf.as_str()) {
            state
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("es_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

/// A browser form that changes something: a deploy login and its CSRF token.
fn form_login(state: &Inner, headers: &HeaderMap, csrf: &str) -> Result<Login, Box<Response>> {
    let Some(login) = state.login(headers) else {
        return Err(Box::new(to_login("/")));
    };
    if !login.deploy {
        return Err(Box::new(forbidden()));
    }
    if let Some(expected) = &login.csrf {
        if !constant_time_eq(expected.as_bytes(), csrf.as_bytes()) {
            return Err(Box::new(
                (StatusCode::FORBIDDEN, "stale form: reload the page").into_response(),
            ));
        }
    }
    Ok(login)
}

async fn redeploy(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let login = match form_login(&state, &headers, &form.csrf) {
        Ok(login) => login,
        Err(response) => return *response,
    };
    let job = match state.db.get(id) {
        Ok(Some(job)) => job,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such job").into_response(),
        Err(err) => return internal(err),
    };
    let Some(trigger) = state
        .settings
        .triggers
        .iter()
        .find(|t| t.name == job.trigger)
    else {
        return (
            StatusCode::CONFLICT,
            "that job's trigger is no longer in [serve]",
        )
            .into_response();
    };
    let new = NewJob {
        trigger: trigger.name.clone(),
        key: trigger.key(),
        source: "redeploy".into(),
        requested_by: Some(login.who),
        commit: job.commit.clone(),
        branch: job.branch.clone(),
        author: job.author.clone(),
        message: job.message.clone(),
        not_before: db::now(),
    };
    match state.enqueue(new) {
        Ok((new_id, _)) => Redirect::to(&format!("/jobs/{new_id}")).into_response(),
        Err(response) => *response,
    }
}

#[derive(Deserialize)]
struct DeployForm {
    #[serde(default)]
    csrf: String,
    trigger: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    commit: String,
}

/// A deploy asked for by hand: which trigger, and optionally branch and commit.
fn manual_job(
    settings: &Settings,
    trigger: &str,
    branch: &str,
    commit: &str,
    who: String,
) -> Result<NewJob, String> {
    let trigger = trigger
        .parse::<usize>()
        .ok()
        .and_then(|i| settings.triggers.get(i))
        .or_else(|| settings.triggers.iter().find(|t| t.name == trigger))
        .ok_or_else(|| format!("no trigger {trigger:?}"))?;
    let branch = match branch.trim() {
        "" => trigger
            .fixed_branch()
            .ok_or_else(|| {
                format!(
                    "trigger {:?} matches several branches: name one",
                    trigger.name
                )
            })?
            .to_string(),
        b => b.to_string(),
    };
    if !trigger.matches_branch(&branch) || !valid_branch(&branch) {
        return Err(format!(
            "branch {branch:?} is not one trigger {:?} deploys",
            trigger.name
        ));
    }
    let commit = match commit.trim() {
        "" => None,
        c if webhook::is_commit_id(c) => Some(c.to_lowercase()),
        c => return Err(format!("{c:?} is not a commit id")),
    };
    Ok(NewJob {
        trigger: trigger.name.clone(),
        key: trigger.key(),
        source: "manual".into(),
        requested_by: Some(who),
        commit,
        branch,
        author: None,
        message: None,
        not_before: db::now(),
    })
}

/// A branch name git accepts and that cannot be taken for an option.
fn valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && !branch.starts_with('-')
        && !branch.contains("..")
        && !branch.ends_with('/')
        && !branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

async fn deploy_by_hand(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<DeployForm>,
) -> Response {
    let login = match form_login(&state, &headers, &form.csrf) {
        Ok(login) => login,
        Err(response) => return *response,
    };
    match manual_job(
        &state.settings,
        &form.trigger,
        &form.branch,
        &form.commit,
        login.who,
    ) {
        Ok(job) => match state.enqueue(job) {
            Ok((id, _)) => Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(response) => *response,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

#[derive(Deserialize)]
struct ApiDeploy {
    trigger: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    commit: String,
}

async fn api_deploy(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Json(body): Json<ApiDeploy>,
) -> Response {
    let Some(login) = state.login(&headers) else {
        return unauthorized_api();
    };
    if !login.deploy || login.csrf.is_some() {
        // A browser session deploys through the page's forms, which carry the CSRF token.
        return forbidden();
    }
    match manual_job(
        &state.settings,
        &body.trigger,
        &body.branch,
        &body.commit,
        login.who,
    ) {
        Ok(job) => match state.enqueue(job) {
            Ok((id, coalesced)) => (
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "coalesced": coalesced})),
            )
                .into_response(),
            Err(response) => *response,
        },
        Err(message) => (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

async fn api_jobs(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if state.login(&headers).is_none() {
        return unauthorized_api();
    }
    match state.db.list(q.limit.unwrap_or(100).clamp(1, 1000)) {
        Ok(jobs) => Json(jobs.iter().map(Job::to_json).collect::<Vec<_>>()).into_response(),
        Err(err) => internal(err),
    }
}

async fn api_job(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    if state.login(&headers).is_none() {
        return unauthorized_api();
    }
    match state.db.get(id) {
        Ok(Some(job)) => Json(job.to_json()).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response(),
        Err(err) => internal(err),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: i64,
}

async fn api_log(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    if state.login(&headers).is_none() {
        return unauthorized_api();
    }
    let job = match state.db.get(id) {
        Ok(Some(job)) => job,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response()
        }
        Err(err) => return internal(err),
    };
    match state.db.log(id, q.after) {
        Ok(lines) => Json(json!({
            "state": job.state,
            "lines": lines.into_iter().map(|(seq, line)| json!({"seq": seq, "line": line})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(err) => internal(err),
    }
}

/// Queues a job for every trigger the push matches.
fn queue_push(state: &Inner, source: &str, push: Push) -> Response {
    if !valid_branch(&push.branch) || !webhook::is_commit_id(&push.commit) {
        return (StatusCode::BAD_REQUEST, "not a branch and commit id").into_response();
    }
    let mut queued = Vec::new();
    let mut skipped = Vec::new();
    for trigger in &state.settings.triggers {
        if !trigger.matches_branch(&push.branch) {
            continue;
        }
        if !trigger.matches_message(&push.message) {
            skipped.push(format!(
                "{}: the commit message does not contain {:?}",
                trigger.name,
                trigger.message_filter.as_deref().unwrap_or("")
            ));
            continue;
        }
        let job = NewJob {
            trigger: trigger.name.clone(),
            key: trigger.key(),
            source: source.into(),
            requested_by: (!push.pusher.is_empty()).then(|| push.pusher.clone()),
            commit: Some(push.commit.to_lowercase()),
            branch: push.branch.clone(),
            author: Some(push.author.clone()),
            message: Some(push.message.clone()),
            not_before: db::now() + state.settings.quiet_period,
        };
        match state.enqueue(job) {
            Ok((id, coalesced)) => {
                queued.push(json!({"id": id, "trigger": trigger.name, "coalesced": coalesced}))
            }
            Err(response) => return *response,
        }
    }
    if queued.is_empty() {
        let reason = if skipped.is_empty() {
            format!("no trigger deploys branch {}", push.branch)
        } else {
            skipped.join("; ")
        };
        eprintln!(
            "es serve: {source} push of {} {}: nothing to do ({reason})",
            push.branch, push.commit
        );
        return (
            StatusCode::NO_CONTENT,
            [("X-Es-Reason", header_safe(&reason))],
        )
            .into_response();
    }
    (StatusCode::ACCEPTED, Json(json!({"queued": queued}))).into_response()
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

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn ignored(what: Ignored) -> Response {
    let reason = match what {
        Ignored::NotAPush(event) => format!("not a push event ({event})"),
        Ignored::NoBranchHead => "a tag or a deleted branch".to_string(),
    };
    (
        StatusCode::NO_CONTENT,
        [("X-Es-Reason", header_safe(&reason))],
    )
        .into_response()
}

/// The forge a webhook comes from: how it is verified and read.
#[derive(Clone, Copy)]
enum Forge {
    GitHub,
    GitLab,
}

async fn github(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Forge::GitHub, &headers, &body)
}

async fn gitlab(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Forge::GitLab, &headers, &body)
}

/// Verifies a webhook before reading anything of it, then queues its push.
fn receive(state: &Inner, forge: Forge, headers: &HeaderMap, body: &[u8]) -> Response {
    let settings = &state.settings;
    let (source, secret, key, event_header) = match forge {
        Forge::GitHub => (
            "github",
            &settings.github_secret,
            "serve.github_secret",
            "x-github-event",
        ),
        Forge::GitLab => (
            "gitlab",
            &settings.gitlab_token,
            "serve.gitlab_token",
            "x-gitlab-event",
        ),
    };
    let Some(secret) = secret else {
        return (StatusCode::UNAUTHORIZED, format!("{key} is not set")).into_response();
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
    if !verified {
        eprintln!("es serve: a {source} webhook with a bad or missing signature was refused");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    let event = header_text(headers, event_header).unwrap_or("");
    let push = match forge {
        Forge::GitHub => webhook::github_push(event, &payload),
        Forge::GitLab => webhook::gitlab_push(event, &payload),
    };
    match push {
        Ok(push) => queue_push(state, source, push),
        Err(what) => ignored(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_that_could_be_options_are_refused() {
        assert!(valid_branch("main"));
        assert!(valid_branch("release/2.1"));
        assert!(!valid_branch("--upload-pack=touch"));
        assert!(!valid_branch("a..b"));
        assert!(!valid_branch("a b"));
        assert!(!valid_branch(""));
    }

    #[test]
    fn every_page_renders() {
        let mut pages = Environment::new();
        pages
            .add_template("layout.html", include_str!("pages/layout.html"))
            .unwrap();
        for (name, text) in [
            ("jobs.html", include_str!("pages/jobs.html")),
            ("job.html", include_str!("pages/job.html")),
            ("login.html", include_str!("pages/login.html")),
        ] {
            pages.add_template(name, text).unwrap();
        }
        let job = json!({"id": 3, "state": "failed", "trigger": "t", "branch": "main",
            "commit": "abc", "short_commit": "abc", "pushes": 2, "created": "x", "source": "github",
            "hosts": [{"host": "h", "ok": false, "outcome": "not switched", "seconds": 1.234, "error": "<b>"}]});
        let html = pages
            .get_template("job.html")
            .unwrap()
            .render(context! { job => job, log => vec!["<script>"], last_seq => 1, active => true, can_deploy => true, csrf => "c", who => "ann" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;"), "the log is escaped");
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.contains("state-not-switched"));
        assert!(html.contains("1.23"));
        let list = pages
            .get_template("jobs.html")
            .unwrap()
            .render(context! { jobs => vec![job], triggers => vec![json!({"name": "t"})], can_deploy => true, csrf => "c", who => "ann" })
            .unwrap();
        assert!(list.contains("href=\"/jobs/3\""));
        pages
            .get_template("login.html")
            .unwrap()
            .render(context! { next => "/", failed => true })
            .unwrap();
    }
}
