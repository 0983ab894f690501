//! What the user sees: per-host progress lines on a terminal, plain lines
//! prefixed with the host otherwise, or one JSON object per line with `--json`.
//! Host output goes to stdout; progress, step lines and summaries to stderr.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::GlobalOpts;

/// How output is shown, chosen once from the flags and the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Animated per-host lines on a terminal.
    Terminal,
    /// Plain lines, for logs and pipes.
    Plain,
    Json,
}

/// The output side of a run.
pub struct Ui {
    pub mode: Mode,
    pub verbose: bool,
    pub quiet: bool,
    multi: Option<MultiProgress>,
    /// Values never shown: every line printed through the Ui has them masked.
    secrets: Mutex<Vec<String>>,
    /// Where the closing summary is also written (`--report`).
    report: Option<std::path::PathBuf>,
}

impl Ui {
    pub fn new(global: &GlobalOpts) -> Ui {
        let mode = if global.json {
            Mode::Json
        } else if std::io::stderr().is_terminal() && !global.quiet {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        let multi = (mode == Mode::Terminal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Ui {
            mode,
            verbose: global.verbose,
            quiet: global.quiet,
            multi,
            secrets: Mutex::new(Vec::new()),
            report: global.report.clone(),
        }
    }

    /// Registers a value (a password) that must never appear in output.
    pub fn add_secret(&self, secret: &str) {
        if secret.len() >= 3 {
            let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
            secrets.push(secret.to_string());
        }
    }

    /// `text` as es prints it: every registered secret replaced by `****`,
    /// and control characters (terminal escape sequences from a host's
    /// output, say) made visible instead of obeyed.
    pub fn mask(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let masked = secrets.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "****")
        });
        neutralize(&masked)
    }

    /// `value` with every registered secret masked in its strings (keys
    /// included). Masking the strings, not the serialized text, catches a
    /// secret holding `"` or `\\` (which JSON escapes) and can never break the
    /// JSON itself, whatever a short secret happens to match.
    fn mask_json(&self, value: Value) -> Value {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        mask_strings(value, &secrets)
    }

    /// A progress line for one host (drawn only on a terminal).
    pub fn host_line(&self, label: &str, width: usize) -> HostLine {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(format!("{label:<width$}"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        HostLine { bar }
    }

    /// Prints a line on stderr without tearing the progress display.
    pub fn note(&self, line: &str) {
        if self.mode == Mode::Json {
            return;
        }
        let line = &self.mask(line);
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Prints text on stdout, every line prefixed with the host (with
    /// `--json`, one `output` event instead).
    pub fn host_text(&self, host: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.mode == Mode::Json {
            self.event("output", host, json!({ "text": text }));
            return;
        }
        let block: String = self
            .mask(text)
            .lines()
            .map(|line| format!("{host} | {line}\n"))
            .collect();
        match &self.multi {
            Some(multi) => multi.suspend(|| print_stdout(&block)),
            None => print_stdout(&block),
        }
    }

    /// Prints one JSON object on a line of its own (only with `--json`).
    pub fn json(&self, value: Value) {
        if self.mode == Mode::Json {
            print_stdout(&format!("{}\n", self.mask_json(value)));
        }
    }

    /// Whether a closing summary is wanted as JSON (`--json` or `--report`).
    pub fn wants_summary(&self) -> bool {
        self.mode == Mode::Json || self.report.is_some()
    }

    /// The closing summary: printed with `--json`, written to the `--report` file.
    pub fn summary(&self, value: Value) {
        if let Some(path) = &self.report {
            let text = format!("{}\n", self.mask_json(value.clone()));
            if let Err(err) = std::fs::write(path, text) {
                eprintln!("es: cannot write the report {}: {err}", path.display());
            }
        }
        self.json(value);
    }

    /// Sends a JSON event of `kind` for `host` with extra fields.
    pub fn event(&self, kind: &str, host: &str, mut fields: Value) {
        if self.mode != Mode::Json {
            return;
        }
        if let Some(map) = fields.as_object_mut() {
            map.insert("event".into(), json!(kind));
            map.insert("host".into(), json!(host));
        }
        self.json(fields);
    }

    /// Prints rows as a table on stdout: columns padded to their widest cell.
    pub fn table(&self, rows: &[Vec<String>]) {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let text: String = rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("{}\n", cells.join("  ").trim_end())
            })
            .collect();
        self.clear();
        print_stdout(&self.mask(&text));
    }

    /// Removes the progress display before a summary is printed.
    pub fn clear(&self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

/// Control characters other than newline and tab, shown escaped (`\u{1b}`).
fn neutralize(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Every string of `value` (and every key) with each of `secrets` replaced by `****`.
fn mask_strings(value: Value, secrets: &[String]) -> Value {
    let mask = |text: String| {
        secrets
            .iter()
            .fold(text, |text, secret| text.replace(secret.as_str(), "****"))
    };
    match value {
        Value::String(text) => Value::String(mask(text)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| mask_strings(item, secrets))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (mask(key), mask_strings(item, secrets)))
                .collect(),
        ),
        other => other,
    }
}

fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// One host's line of the progress display.
pub struct HostLine {
    bar: Option<ProgressBar>,
}

impl HostLine {
    pub fn set(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        }
    }

    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_hosts_are_shown_not_obeyed() {
        assert_eq!(neutralize("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(neutralize("\u{1b}[2Jgone\r"), "\\u{1b}[2Jgone\\u{d}");
        assert_eq!(neutralize("bell\u{7}\u{9b}31m"), "bell\\u{7}\\u{9b}31m");
    }

    #[test]
    fn secrets_are_masked_in_json_strings_whatever_json_escapes() {
        let secrets = vec![r#"pa"ss\word"#.to_string(), "true".to_string()];
        let value = json!({
            "error": r#"login with pa"ss\word failed"#,
            "ok": true,
            "hosts": [{ "note": "it is true" }],
        });
        let masked = mask_strings(value, &secrets).to_string();
        assert!(!masked.contains("ss\\\\word"), "{masked}");
        assert!(
            masked.contains(r#""error":"login with **** failed""#),
            "{masked}"
        );
        // A secret that matches JSON's own words leaves the JSON valid.
        let back: Value = serde_json::from_str(&masked).expect("valid JSON");
        assert_eq!(back["ok"], json!(true));
        assert_eq!(back["hosts"][0]["note"], json!("it is ****"));
    }
}
