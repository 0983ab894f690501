//! "Deploy again" and "Roll back" on a job: `es deploy VERSION` of a version
//! built before (no build), after a confirmation page.

use axum::extract::{Form, Path, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use super::auth::{forbidden, form_login, to_login, CsrfForm};
use super::db::{self, Job, NewJob};
use super::web::{internal, Inner, State};

/// What a release deploys: the version, and the commit and branch it was built from.
struct Release {
    version: String,
    commit: Option<String>,
    branch: String,
}

/// The version "deploy again" (`rollback` false) or "roll back" would deploy.
fn release_of(state: &Inner, job: &Job, rollback: bool) -> Result<Release, Box<Response>> {
    if rollback {
        return match state
            .db
            .previous_good(&job.key, job.id, job.version.as_deref())
        {
            Ok(Some((version, commit, branch))) => Ok(Release {
                version,
                commit,
                branch,
            }),
            Ok(None) => Err(Box::new(
                (
                    StatusCode::CONFLICT,
                    "no earlier version of this role and venv was deployed successfully",
                )
                    .into_response(),
            )),
            Err(err) => Err(Box::new(internal(err))),
        };
    }
    match &job.version {
        Some(version) => Ok(Release {
            version: version.clone(),
            commit: job.commit.clone(),
            branch: job.branch.clone(),
        }),
        None => Err(Box::new(
            (StatusCode::CONFLICT, "this job built no version").into_response(),
        )),
    }
}

fn job(state: &Inner, id: i64) -> Result<Job, Box<Response>> {
    match state.db.get(id) {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(Box::new(
            (StatusCode::NOT_FOUND, "no such job").into_response(),
        )),
        Err(err) => Err(Box::new(internal(err))),
    }
}

async fn confirm(state: &Inner, id: i64, headers: &HeaderMap, rollback: bool) -> Response {
    let what = if rollback { "rollback" } else { "redeploy" };
    let Some(login) = state.login(headers) else {
        return to_login(&format!("/jobs/{id}/{what}"));
    };
    if !login.deploy {
        return forbidden();
    }
    let release = match job(state, id).and_then(|job| release_of(state, &job, rollback)) {
        Ok(release) => release,
        Err(response) => return *response,
    };
    state.render(
        "confirm.html",
        context! {
            project => state.project, who => login.who, can_deploy => login.deploy,
            csrf => login.csrf, id => id, action => what, rollback => rollback,
            version => release.version, branch => release.branch,
        },
    )
}

async fn release(
    state: &Inner,
    id: i64,
    headers: &HeaderMap,
    csrf: &str,
    rollback: bool,
) -> Response {
    let login = match form_login(state, headers, csrf) {
        Ok(login) => login,
        Err(response) => return *response,
    };
    let job = match job(state, id) {
        Ok(job) => job,
        Err(response) => return *response,
    };
    let release = match release_of(state, &job, rollback) {
        Ok(release) => release,
        Err(response) => return *response,
    };
    if !state
        .settings
        .triggers
        .iter()
        .any(|t| t.name == job.trigger)
    {
        return (
            StatusCode::CONFLICT,
            "that job's trigger is no longer in [serve]",
        )
            .into_response();
    }
    let new = NewJob {
        trigger: job.trigger.clone(),
        key: job.key.clone(),
        source: if rollback { "rollback" } else { "redeploy" }.into(),
        requested_by: Some(login.who),
        commit: release.commit,
        branch: release.branch,
        author: None,
        message: Some(format!(
            "{} {} (from job {id})",
            if rollback {
                "roll back to"
            } else {
                "deploy again"
            },
            release.version
        )),
        version: Some(release.version),
        not_before: db::now(),
    };
    match state.enqueue(new) {
        Ok((new_id, _)) => Redirect::to(&format!("/jobs/{new_id}")).into_response(),
        Err(response) => *response,
    }
}

pub async fn confirm_again(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    confirm(&state, id, &headers, false).await
}

pub async fn confirm_rollback(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    confirm(&state, id, &headers, true).await
}

pub async fn again(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    release(&state, id, &headers, &form.csrf, false).await
}

pub async fn rollback(
    Extract(state): Extract<State>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    release(&state, id, &headers, &form.csrf, true).await
}
