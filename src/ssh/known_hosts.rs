//! known_hosts checking, as OpenSSH does it: plain and hashed (`|1|salt|hash`)
//! host patterns, `[host]:port` entries, negation and wildcards, `@revoked`.
//! Files are read by es itself so that one odd line (a key type libssh2 does not
//! know, a certificate authority) never makes a whole file unreadable.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::hosts::ssh_config::wildcard_match;

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    patterns: String,
    key_type: String,
    key: Vec<u8>,
    revoked: bool,
}

/// The known host keys from every file es checks.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// What the known keys say about a host's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    /// The host is known with another key of the same type (or this key is revoked).
    Changed,
    NotFound,
}

impl KnownHosts {
    /// Reads every file that exists; missing files are skipped.
    pub fn load(files: &[PathBuf]) -> KnownHosts {
        let mut known = KnownHosts::default();
        for file in files {
            if let Ok(text) = std::fs::read_to_string(file) {
                known.add_text(&text);
            }
        }
        known
    }

    /// The known hosts of `files`, read once per process and shared by every
    /// session (a run over 200 hosts read and decoded the files 200 times).
    pub fn shared(files: &[PathBuf]) -> Arc<KnownHosts> {
        type Cache = Vec<(Vec<PathBuf>, Arc<KnownHosts>)>;
        static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, known)) = cache.iter().find(|(f, _)| f.as_slice() == files) {
            return Arc::clone(known);
        }
        let known = Arc::new(KnownHosts::load(files));
        cache.push((files.to_vec(), Arc::clone(&known)));
        known
    }

    /// Adds the entries of known_hosts text, skipping lines it cannot use.
    pub fn add_text(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or("");
            let mut revoked = false;
            if first.starts_with('@') {
                if first != "@revoked" {
                    continue; // @cert-authority: not used by es
                }
                revoked = true;
                first = fields.next().unwrap_or("");
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = STANDARD.decode(key) else {
                continue;
            };
            self.entries.push(Entry {
                patterns: first.to_string(),
                key_type: key_type.to_string(),
                key,
                revoked,
            });
        }
    }

    /// Key types known for this host, to prefer them in the handshake.
    pub fn key_types_for(&self, host: &str, port: u16) -> Vec<String> {
        let name = host_name(host, port);
        let mut types: Vec<String> = Vec::new();
        for entry in self.entries.iter().filter(|e| !e.revoked) {
            if entry_matches(&entry.patterns, &name) && !types.contains(&entry.key_type) {
                types.push(entry.key_type.clone());
            }
        }
        types
    }

    /// Checks a host's key (the SSH wire blob) against the known keys.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = host_name(host, port);
        let key_type = key_type_of(key);
        let mut verdict = Verdict::NotFound;
        for entry in &self.entries {
            if !entry_matches(&entry.patterns, &name) {
                continue;
            }
            if entry.revoked && entry.key == key {
                return Verdict::Changed;
            }
            if entry.revoked {
                continue;
            }
            if entry.key == key {
                verdict = Verdict::Match;
            } else if Some(entry.key_type.as_str()) == key_type.as_deref()
                && verdict == Verdict::NotFound
            {
                verdict = Verdict::Changed;
            }
        }
        verdict
    }
}

static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Records a host key in `file` (creating it and its directory), as OpenSSH's accept-new does.
pub fn record(file: &Path, host: &str, port: u16, key: &[u8]) -> Result<()> {
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key_type = key_type_of(key).unwrap_or_else(|| "unknown".into());
    let line = format!(
        "{} {} {}\n",
        host_name(host, port),
        key_type,
        STANDARD.encode(key)
    );
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", file.display()))
}

/// `SHA256:...` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(sha256: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha256))
}

/// The name a host has in known_hosts: `host`, or `[host]:port` off port 22.
fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key type named at the start of an SSH public key blob.
pub fn key_type_of(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

fn entry_matches(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, name) {
                return false;
            }
        } else if wildcard_match(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn line(patterns: &str, key: &[u8]) -> String {
        format!(
            "{patterns} {} {}\n",
            key_type_of(key).unwrap(),
            STANDARD.encode(key)
        )
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn plain_port_hashed_and_changed() {
        let good = blob("ssh-ed25519", b"good");
        let other = blob("ssh-ed25519", b"evil");
        let rsa = blob("ssh-rsa", b"rsa");
        let mut known = KnownHosts::default();
        known.add_text(&line("10.0.0.1,web1", &good));
        known.add_text(&line("[10.0.0.2]:2202", &good));
        known.add_text(&line(&hashed("10.0.0.3", b"salt-salt-salt-salt!"), &good));
        known.add_text("@cert-authority * ssh-ed25519 AAAA\ngarbage line\n");

        assert_eq!(known.check("10.0.0.1", 22, &good), Verdict::Match);
        assert_eq!(known.check("WEB1", 22, &good), Verdict::Match);
        assert_eq!(known.check("10.0.0.1", 22, &other), Verdict::Changed);
        assert_eq!(known.check("10.0.0.1", 22, &rsa), Verdict::NotFound);
        assert_eq!(known.check("10.0.0.2", 2202, &good), Verdict::Match);
        assert_eq!(known.check("10.0.0.2", 22, &good), Verdict::NotFound);
        assert_eq!(known.check("10.0.0.3", 22, &good), Verdict::Match);
        assert_eq!(known.check("10.0.0.3", 22, &other), Verdict::Changed);
        assert_eq!(known.check("10.0.0.4", 22, &good), Verdict::NotFound);
        assert_eq!(known.key_types_for("10.0.0.3", 22), vec!["ssh-ed25519"]);
    }

    #[test]
    fn negation_wildcards_and_revoked() {
        let key = blob("ssh-ed25519", b"k");
        let mut known = KnownHosts::default();
        known.add_text(&line("*.internal,!bad.internal", &key));
        assert_eq!(known.check("a.internal", 22, &key), Verdict::Match);
        assert_eq!(known.check("bad.internal", 22, &key), Verdict::NotFound);
        known.add_text(&format!("@revoked {}", line("a.internal", &key)));
        assert_eq!(known.check("a.internal", 22, &key), Verdict::Changed);
    }

    #[test]
    fn recorded_keys_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        let key = blob("ssh-ed25519", b"recorded");
        record(&file, "10.9.9.9", 2222, &key).unwrap();
        let known = KnownHosts::load(&[file]);
        assert_eq!(known.check("10.9.9.9", 2222, &key), Verdict::Match);
    }

    #[test]
    fn shared_files_are_read_once_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let first = blob("ssh-ed25519", b"first");
        record(&file, "10.9.9.1", 22, &first).unwrap();
        let files = [file.clone()];
        let known = KnownHosts::shared(&files);
        assert_eq!(known.check("10.9.9.1", 22, &first), Verdict::Match);
        // A key recorded later is not in the shared copy (session.rs reads
        // the files again for a host it does not find).
        let later = blob("ssh-ed25519", b"later");
        record(&file, "10.9.9.2", 22, &later).unwrap();
        let again = KnownHosts::shared(&files);
        assert!(Arc::ptr_eq(&known, &again));
        assert_eq!(again.check("10.9.9.2", 22, &later), Verdict::NotFound);
        assert_eq!(
            KnownHosts::load(&files).check("10.9.9.2", 22, &later),
            Verdict::Match
        );
    }

    #[test]
    fn fingerprint_is_unpadded_base64() {
        assert_eq!(
            fingerprint(&[0xff; 32]),
            format!("SHA256:{}", "/".repeat(42) + "8")
        );
    }
}
