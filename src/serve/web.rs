//! The HTTP side of `es serve`: webhooks, the job pages, the JSON API, and
//! who may see and do what.
//!
//! Reading and deploying are separate permissions: `serve.read_token` and
//! users without `deploy = true` may only read; `serve.token` and users with
//! `deploy = true` may also start deploys. API clients send
//! `Authorization: Bearer TOKEN` (or HTTP Basic for users); a browser logs in
//! on `/login` and gets a session cookie (HttpOnly, SameSite=Strict), and
//! every form that changes something carries the session's CSRF token.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Form, Path, Query, Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::{context, Environment};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{self, forbidden, form_login, to_login, Limiter};
use super::db::{self, Db, Job, NewJob};
use super::jobs::Queue;
use super::{hooks, release, webhook, Settings};

/// A push's JSON is small; GitHub's largest are a few MB (25 MB is its cap,
/// for which this server has no use: a larger body is refused before it is read).
const BODY_LIMIT: usize = 5 * 1024 * 1024;

pub struct Inner {
    pub(super) db: Arc<Db>,
    pub(super) settings: Arc<Settings>,
    pub(super) queue: Queue,
    pub(super) limiter: Limiter,
    /// Set on SIGTERM: webhooks are answered 503 while jobs finish.
    pub(super) draining: AtomicBool,
    pages: Environment<'static>,
    pub(super) project: String,
}

pub type State = Arc<Inner>;

pub fn new_state(db: Arc<Db>, settings: Arc<Settings>, queue: Queue, project: String) -> State {
    let mut pages = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("pages/layout.html")),
        ("jobs.html", include_str!("pages/jobs.html")),
        ("job.html", include_str!("pages/job.html")),
        ("login.html", include_str!("pages/login.html")),
        ("confirm.html", include_str!("pages/confirm.html")),
        ("deliveries.html", include_str!("pages/deliveries.html")),
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
        limiter: Limiter::default(),
        draining: AtomicBool::new(false),
        pages,
        project,
    })
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route(
            "/jobs/{id}/redeploy",
            get(release::confirm_again).post(release::again),
        )
        .route(
            "/jobs/{id}/rollback",
            get(release::confirm_rollback).post(release::rollback),
        )
        .route("/deliveries", get(deliveries_page))
        .route("/deploy", post(deploy_by_hand))
        .route("/login", get(auth::login_page).post(auth::login_post))
        .route("/logout", post(auth::logout))
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/jobs/{id}/log", get(api_log))
        .route("/api/deploy", post(api_deploy))
        .route("/webhook/github", post(hooks::github))
        .route("/webhook/gitlab", post(hooks::gitlab))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
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

impl Inner {
    pub(super) fn render(&self, page: &str, ctx: minijinja::Value) -> Response {
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

    pub(super) fn enqueue(&self, job: NewJob) -> Result<(i64, bool), Box<Response>> {
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

fn unauthorized_api() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "log in: Authorization: Bearer TOKEN"})),
    )
        .into_response()
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
    // Second resolution: a job that failed at once took "under 1s", not "0s".
    v["took"] = json!(job
        .duration()
        .map(|s| if s < 1 {
            "under 1s".to_string()
        } else {
            format!("{s}s")
        })
        .unwrap_or_default());
    v["hosts_ok"] = json!(job.hosts.iter().filter(|h| h.ok).count());
    v["hosts_total"] = json!(job.hosts.len());
    v
}

pub(super) fn internal(err: anyhow::Error) -> Response {
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

async fn deliveries_page(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    let Some(login) = state.login(&headers) else {
        return to_login("/deliveries");
    };
    match state.db.deliveries(500) {
        Ok(deliveries) => state.render(
            "deliveries.html",
            context! {
                project => state.project, who => login.who, can_deploy => login.deploy,
                csrf => login.csrf, deliveries => deliveries,
            },
        ),
        Err(err) => internal(err),
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
        version: None,
        not_before: db::now(),
    })
}

/// A branch name git accepts and that cannot be taken for an option.
pub(super) fn valid_branch(branch: &str) -> bool {
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
            ("confirm.html", include_str!("pages/confirm.html")),
            ("deliveries.html", include_str!("pages/deliveries.html")),
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
        let confirm = pages
            .get_template("confirm.html")
            .unwrap()
            .render(context! { id => 3, action => "rollback", rollback => true, version => "1.2<3", branch => "main", csrf => "c", who => "ann", can_deploy => true })
            .unwrap();
        assert!(confirm.contains("action=\"/jobs/3/rollback\"") && confirm.contains("1.2&lt;3"));
        let deliveries = pages
            .get_template("deliveries.html")
            .unwrap()
            .render(context! { deliveries => vec![json!({"id": 1, "source": "github", "delivery": "d<1", "received": "x", "status": 409, "answer": "refused: <older>", "branch": "main", "commit": "abc"})], who => "ann" })
            .unwrap();
        assert!(deliveries.contains("refused: &lt;older&gt;") && deliveries.contains("d&lt;1"));
        pages
            .get_template("login.html")
            .unwrap()
            .render(context! { next => "/", failed => true })
            .unwrap();
    }
}
