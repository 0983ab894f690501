//! Telling the team: a JSON webhook (the job object), a Slack-compatible
//! webhook, a DingTalk robot, or email over SMTP. A notification that cannot
//! be delivered is logged and retried; it never changes the job's outcome.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::db::{Db, Job};
use super::{NotifySpec, Settings};
use crate::config::serve::{NotifyKind, SmtpTls};

/// Sends `event` (start, success, failure) of `job` to every notification
/// that wants it, in the background.
pub fn send(settings: Arc<Settings>, db: Arc<Db>, event: &str, job: Job) {
    let wanted: Vec<usize> = settings
        .notify
        .iter()
        .enumerate()
        .filter(|(_, n)| n.applies(&job.trigger, event))
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return;
    }
    let event = event.to_string();
    tokio::spawn(async move {
        for i in wanted {
            let settings = settings.clone();
            let job = job.clone();
            let event = event.clone();
            let db = db.clone();
            tokio::spawn(async move {
                let spec = &settings.notify[i];
                let attempts = spec.retries + 1;
                for attempt in 1..=attempts {
                    let (s, j, e) = (settings.clone(), job.clone(), event.clone());
                    let sent =
                        tokio::task::spawn_blocking(move || deliver(&s, &s.notify[i], &e, &j))
                            .await
                            .map_err(|e| anyhow!("{e}"))
                            .and_then(|r| r);
                    match sent {
                        Ok(()) => {
                            eprintln!(
                                "es serve: job {}: {} notification ({event}) sent",
                                job.id,
                                spec.label()
                            );
                            return;
                        }
                        Err(err) => {
                            let line = format!(
                                "es serve: {} notification ({event}) failed, attempt {attempt} of {attempts}: {err:#}",
                                spec.label()
                            );
                            eprintln!("es serve: job {}: {line}", job.id);
                            note_in_log(&db, job.id, &line);
                            if attempt < attempts {
                                tokio::time::sleep(backoff(attempt)).await;
                            }
                        }
                    }
                }
            });
        }
    });
}

/// 2 s, 8 s, 30 s, 30 s ...
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(match attempt {
        1 => 2,
        2 => 8,
        _ => 30,
    })
}

fn note_in_log(db: &Db, id: i64, line: &str) {
    if let Ok(Some(job)) = db.get(id) {
        let _ = db.append_log(id, &[line.to_string()], job.log_offset);
    }
}

/// One line that says what happened.
pub fn headline(settings: &Settings, event: &str, job: &Job) -> String {
    let what = format!(
        "{} {} ({} on {})",
        job.trigger,
        job.version.as_deref().unwrap_or("(not built yet)"),
        job.short_commit(),
        job.branch
    );
    let hosts = if job.hosts.is_empty() {
        String::new()
    } else {
        format!(
            ": {} ok, {} not ok",
            job.hosts.iter().filter(|h| h.ok).count(),
            job.hosts.iter().filter(|h| !h.ok).count()
        )
    };
    let link = settings
        .public_url
        .as_ref()
        .map(|u| format!(" {u}/jobs/{}", job.id))
        .unwrap_or_default();
    match event {
        "start" => format!("es: job {} started: {what}{link}", job.id),
        _ => format!(
            "es: job {} {}: {what}{hosts}{}{link}",
            job.id,
            job.state,
            job.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        ),
    }
}

fn deliver(settings: &Settings, spec: &NotifySpec, event: &str, job: &Job) -> Result<()> {
    let mut job = job.clone();
    for text in [&mut job.error, &mut job.message].into_iter().flatten() {
        *text = mask(settings, text);
    }
    let job = &job;
    let text = headline(settings, event, job);
    match spec.kind {
        NotifyKind::Json => {
            let mut body = job.to_json();
            body["event"] = json!(event);
            post(spec, body)
        }
        NotifyKind::Slack => post(spec, json!({ "text": text })),
        NotifyKind::Dingtalk => post(
            spec,
            json!({ "msgtype": "text", "text": { "content": text } }),
        ),
        NotifyKind::Email => email(spec, &text, job),
    }
}

fn post(spec: &NotifySpec, body: Value) -> Result<()> {
    let mut url = spec.url.clone().ok_or_else(|| anyhow!("no url"))?;
    if let (NotifyKind::Dingtalk, Some(secret)) = (spec.kind, &spec.secret) {
        url = dingtalk_signed(&url, secret, now_millis())?;
    }
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("es/", env!("CARGO_PKG_VERSION")))
        .send(body.to_string().as_bytes())
        .map_err(|e| anyhow!("{}", mask_url(&e.to_string(), &url)))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(anyhow!("the webhook answered HTTP {status}"));
    }
    if spec.kind == NotifyKind::Dingtalk {
        // DingTalk answers 200 to a refused message too; its errcode says.
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("reading DingTalk's answer: {e}"))?;
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("DingTalk's answer is not JSON: {e}"))?;
        dingtalk_accepted(&answer)?;
    }
    Ok(())
}

/// DingTalk's answer: `errcode` 0, or the refusal with its `errmsg`.
fn dingtalk_accepted(answer: &Value) -> Result<()> {
    match answer["errcode"].as_i64() {
        Some(0) => Ok(()),
        code => Err(anyhow!(
            "DingTalk refused the message: errcode {}, {}",
            code.map_or("missing".to_string(), |c| c.to_string()),
            answer["errmsg"].as_str().unwrap_or("")
        )),
    }
}

/// `text` with every secret of the server masked.
fn mask(settings: &Settings, text: &str) -> String {
    settings
        .secrets
        .iter()
        .filter(|s| s.len() >= 3)
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "****"))
}

/// An error text without the URL, whose path or query may hold a token.
fn mask_url(text: &str, url: &str) -> String {
    text.replace(url, "(the webhook URL)")
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// DingTalk's signed robot URL: `&timestamp=MS&sign=` the URL-encoded base64
/// HMAC-SHA256 of "MS\nSECRET" under SECRET.
pub fn dingtalk_signed(url: &str, secret: &str, millis: u128) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| anyhow!("unusable DingTalk secret"))?;
    mac.update(format!("{millis}\n{secret}").as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let encoded: String = sign
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let join = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{join}timestamp={millis}&sign={encoded}"))
}

fn email(spec: &NotifySpec, subject: &str, job: &Job) -> Result<()> {
    use lettre::message::Mailbox;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};

    let (host, port) = spec.smtp.clone().ok_or_else(|| anyhow!("no smtp"))?;
    let from: Mailbox = spec
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .context("the from address")?;
    let mut message = Message::builder().from(from).subject(subject);
    for to in &spec.to {
        message = message.to(to.parse().with_context(|| format!("the address {to:?}"))?);
    }
    let mut body = format!("{subject}\n\n");
    for h in &job.hosts {
        body.push_str(&format!(
            "  {}  {}{}\n",
            h.host,
            h.outcome,
            h.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(message) = &job.message {
        body.push_str(&format!(
            "\ncommit {} by {}\n{message}\n",
            job.commit.as_deref().unwrap_or(""),
            job.author.as_deref().unwrap_or("")
        ));
    }
    // A single text/plain part: MIME-Version and Content-Type with it, and a
    // Message-ID, which mail filters expect of every message.
    let message = message
        .message_id(None)
        .date_now()
        .singlepart(lettre::message::SinglePart::plain(body))
        .context("building the email")?;
    let builder = match spec.tls {
        SmtpTls::None => SmtpTransport::builder_dangerous(&host),
        SmtpTls::Starttls => SmtpTransport::starttls_relay(&host)?,
        SmtpTls::Tls => SmtpTransport::relay(&host)?,
    };
    let mut builder = builder.port(port).timeout(Some(Duration::from_secs(20)));
    if let (Some(user), Some(password)) = (&spec.username, &spec.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    builder
        .build()
        .send(&message)
        .context("sending the email")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dingtalk_errcode_is_a_failure() {
        assert!(dingtalk_accepted(&json!({"errcode": 0, "errmsg": "ok"})).is_ok());
        let err = dingtalk_accepted(&json!({"errcode": 310000, "errmsg": "sign not match"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("310000") && err.contains("sign not match"),
            "{err}"
        );
        assert!(dingtalk_accepted(&json!({})).is_err());
    }

    #[test]
    fn dingtalk_signature_is_appended_url_encoded() {
        let url = dingtalk_signed(
            "https://oapi.example.com/robot/send?access_token=abc",
            "SECxyz",
            1_700_000_000_000,
        )
        .unwrap();
        assert!(url.starts_with(
            "https://oapi.example.com/robot/send?access_token=abc&timestamp=1700000000000&sign="
        ));
        let sign = url.rsplit("sign=").next().unwrap();
        assert!(!sign.contains('+') && !sign.contains('/') && !sign.contains('='));
        // The same input signs the same.
        assert_eq!(
            url,
            dingtalk_signed(
                "https://oapi.example.com/robot/send?access_token=abc",
                "SECxyz",
                1_700_000_000_000
            )
            .unwrap()
        );
    }
}
