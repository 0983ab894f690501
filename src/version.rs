//! Versions and names as Python packaging defines them: PEP 440 versions (via
//! `pep440_rs`), PEP 503 name normalisation, the project name and version in
//! sdist and wheel file names, and the version schemes of `es build`.

use std::str::FromStr;

use anyhow::Result;

pub use pep440_rs::Version;

use crate::bad_input;
use crate::config::VersionScheme;

/// Parses a PEP 440 version, with a message fit for the user on failure.
pub fn parse_version(text: &str) -> Result<Version, String> {
    Version::from_str(text.trim())
        .map_err(|err| format!("`{text}` is not a PEP 440 version: {err}"))
}

/// PEP 503 normalised project name: runs of `-`, `_` and `.` become one `-`, lower case.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator = false;
        }
    }
    out
}

/// The kind of a distribution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    Sdist,
    Wheel,
}

/// A distribution file name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFile {
    /// The name as written in the file name (not normalised).
    pub name: String,
    pub version: Version,
    pub kind: DistKind,
    /// The wheel's Python tag (`py3`, `cp311`, `py2.py3`); `None` for an sdist.
    pub python_tag: Option<String>,
}

const SDIST_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar"];

/// Splits a wheel or sdist file name into name and version; `None` when it is neither
/// or its version is not PEP 440.
///
/// Wheel names are `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl` with `_`
/// standing for `-` in the name. Sdist names are `{name}-{version}.tar.gz`; legacy sdists
/// may have `-` inside the name, so the name ends at the first `-` after which a valid
/// version follows.
pub fn parse_filename(filename: &str) -> Option<DistFile> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if parts.len() != 5 && parts.len() != 6 {
            return None;
        }
        let version = Version::from_str(parts[1]).ok()?;
        return Some(DistFile {
            name: parts[0].to_string(),
            version,
            kind: DistKind::Wheel,
            python_tag: Some(parts[parts.len() - 3].to_string()),
        });
    }
    let stem = SDIST_SUFFIXES
        .iter()
        .find_map(|suffix| filename.strip_suffix(suffix))?;
    for (i, _) in stem.match_indices('-') {
        let (name, version) = (&stem[..i], &stem[i + 1..]);
        if name.is_empty() {
            continue;
        }
        if let Ok(version) = Version::from_str(version) {
            return Some(DistFile {
                name: name.to_string(),
                version,
                kind: DistKind::Sdist,
                python_tag: None,
            });
        }
    }
    None
}

/// The version of `filename` when it is a distribution of `project` (PEP 503 names
/// compared); `None` for another project's file or a name that does not parse.
pub fn version_for(project: &str, filename: &str) -> Option<Version> {
    let wanted = normalize_name(project);
    if filename.ends_with(".whl") {
        let file = parse_filename(filename)?;
        return (normalize_name(&file.name) == wanted).then_some(file.version);
    }
    // An sdist: the name part is the part before a `-` whose normalisation is the project.
    let stem = SDIST_SUFFIXES
        .iter()
        .find_map(|suffix| filename.strip_suffix(suffix))?;
    stem.match_indices('-')
        .find(|(i, _)| normalize_name(&stem[..*i]) == wanted)
        .and_then(|(i, _)| Version::from_str(&stem[i + 1..]).ok())
}

/// A calendar date in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDate {
    pub year: u64,
    pub month: u64,
    pub day: u64,
}

/// Local wall-clock time, for dates in versions and `${release_time}`.
#[derive(Debug, Clone, Copy)]
pub struct LocalTime {
    pub date: LocalDate,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl LocalTime {
    /// The current local time (the system's time zone, as `date` shows it).
    pub fn now() -> LocalTime {
        let [year, month, day, hour, minute, second] = crate::clock::local_now();
        LocalTime {
            date: LocalDate { year, month, day },
            hour,
            minute,
            second,
        }
    }

    /// `YYYY-MM-DD HH:MM:SS`
    pub fn stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.date.year, self.date.month, self.date.day, self.hour, self.minute, self.second
        )
    }
}

/// Which part of a semver version `--bump` raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Bump {
    #[default]
    Patch,
    Minor,
    Major,
}

/// The highest of `versions`, by PEP 440 ordering.
pub fn highest<'a>(versions: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
    versions.into_iter().max()
}

/// The version the next build gets under `scheme`, given today's date and the
/// versions already on the index.
///
/// - calver: `YYYY.M.D.N`, N one more than the highest build of today (any
///   pre/post/dev/local suffix counted), starting at 1;
/// - essay: the same with a one-digit year (`6.11.22.1` in 2026), for indexes already
///   holding essay's versions. It wraps every ten years: a 2029 build compares higher
///   than a 2030 one;
/// - semver: the highest final `X.Y.Z` on the index bumped by `bump`; `0.1.0` when
///   there is none. Pre-releases and versions of another shape are ignored.
pub fn next_version(
    scheme: VersionScheme,
    today: LocalDate,
    existing: &[Version],
    bump: Bump,
) -> Version {
    match scheme {
        VersionScheme::Calver => dated_next(today.year, today, existing),
        VersionScheme::Essay => dated_next(today.year % 10, today, existing),
        VersionScheme::Semver => semver_next(existing, bump),
    }
}

fn dated_next(year: u64, today: LocalDate, existing: &[Version]) -> Version {
    let prefix = [year, today.month, today.day];
    let n = existing
        .iter()
        .filter(|v| v.epoch() == 0 && v.release().len() == 4 && v.release()[..3] == prefix)
        .map(|v| v.release()[3])
        .max()
        .map_or(1, |n| n + 1);
    Version::new([year, today.month, today.day, n])
}

fn semver_next(existing: &[Version], bump: Bump) -> Version {
    let highest = existing
        .iter()
        .filter(|v| v.epoch() == 0 && v.release().len() == 3 && v.is_stable() && !v.is_local())
        .max();
    let Some(highest) = highest else {
        return Version::new([0, 1, 0]);
    };
    let r = highest.release();
    let mut next = semver::Version::new(r[0], r[1], r[2]);
    match bump {
        Bump::Patch => next.patch += 1,
        Bump::Minor => {
            next.minor += 1;
            next.patch = 0;
        }
        Bump::Major => {
            next.major += 1;
            next.minor = 0;
            next.patch = 0;
        }
    }
    Version::new([next.major, next.minor, next.patch])
}

/// `version` with `name` as its PEP 440 local label (`2026.11.22.1+fixbug`). The name is
/// normalised as PEP 440 does (lower case, `-` and `_` become `.`).
pub fn with_local(version: &Version, name: &str) -> Result<Version> {
    let label: String = name
        .trim()
        .chars()
        .map(|c| match c {
            '-' | '_' => '.',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let valid = !label.is_empty()
        && label
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !valid {
        bad_input!(
            "--name {name:?}: a build name must be letters and digits, optionally separated by `.`, `-` or `_`"
        );
    }
    if version.is_local() {
        bad_input!("{version} already has a local label; give --name or a local version, not both");
    }
    match Version::from_str(&format!("{version}+{label}")) {
        Ok(v) => Ok(v),
        Err(err) => bad_input!("--name {name:?}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        parse_version(text).unwrap()
    }

    const DAY: LocalDate = LocalDate {
        year: 2026,
        month: 11,
        day: 22,
    };

    #[test]
    fn pep440_ordering_published_examples() {
        // The ordering example of PEP 440 ("Summary of permitted suffixes and relative
        // ordering"), plus epochs and local versions.
        let ordered = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "2026.11.22.2",
            "1!0.1",
            "1!1.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn pep440_normalisation_and_equality() {
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0alpha1"), v("1.0a1"));
        assert_eq!(v("1.0c1"), v("1.0rc1"));
        assert_eq!(v("v1.0"), v("1.0"));
        assert_eq!(v("1.0+ubuntu-1").to_string(), "1.0+ubuntu.1");
        assert!(parse_version("1.2.3.4-fixbug").is_err());
        assert!(parse_version("not a version").is_err());
    }

    #[test]
    fn essay_integer_comparison_defect_is_gone() {
        // essay compared integer lists: 2026.11.9.1 vs 2026.11.10.1 and suffixes crashed it.
        assert!(v("2026.11.9.1") < v("2026.11.10.1"));
        assert!(v("2026.11.22.1") < v("2026.11.22.1+fixbug"));
        assert!(v("2026.11.22.1+fixbug") < v("2026.11.22.2"));
    }

    #[test]
    fn pep503_normalisation() {
        // The examples of PEP 503 and the packaging spec on name normalisation.
        for name in [
            "friendly-bard",
            "Friendly-Bard",
            "FRIENDLY-BARD",
            "friendly.bard",
            "friendly_bard",
            "friendly--bard",
            "FrIeNdLy-._.-bArD",
        ] {
            assert_eq!(normalize_name(name), "friendly-bard", "{name}");
        }
        assert_eq!(normalize_name("Acme_Web"), "acme-web");
        assert_eq!(normalize_name("acme-web"), "acme-web");
        assert_eq!(normalize_name("acme.web"), "acme-web");
        assert_ne!(normalize_name("acmeweb-extra"), normalize_name("acme-web"));
        assert_ne!(normalize_name("acmeweb"), normalize_name("acme-web"));
    }

    #[test]
    fn file_names() {
        let wheel = parse_filename("acme_web-2026.11.22.1-py3-none-any.whl").unwrap();
        assert_eq!(wheel.name, "acme_web");
        assert_eq!(wheel.version, v("2026.11.22.1"));
        assert_eq!(wheel.kind, DistKind::Wheel);
        assert_eq!(wheel.python_tag.as_deref(), Some("py3"));
        let built = parse_filename("numpy-1.26.0-1-cp311-cp311-manylinux_2_17_x86_64.whl").unwrap();
        assert_eq!(built.python_tag.as_deref(), Some("cp311"));
        let sdist = parse_filename("acme_web-1.0.post1.tar.gz").unwrap();
        assert_eq!(
            (sdist.name.as_str(), sdist.kind),
            ("acme_web", DistKind::Sdist)
        );
        let legacy = parse_filename("acme-web-1.0.zip").unwrap();
        assert_eq!(legacy.name, "acme-web");
        assert!(parse_filename("acme_web-latest.tar.gz").is_none());
        assert!(parse_filename("README.md").is_none());
    }

    #[test]
    fn files_of_one_project_only() {
        assert_eq!(
            version_for("Acme.Web", "acme_web-1.0-py3-none-any.whl"),
            Some(v("1.0"))
        );
        assert_eq!(
            version_for("acme-web", "acme-web-2.0.tar.gz"),
            Some(v("2.0"))
        );
        assert_eq!(
            version_for("acme_web", "Acme.Web-2.0.tar.gz"),
            Some(v("2.0"))
        );
        // essay's regex matched these.
        assert_eq!(version_for("acmeweb", "acmeweb-extra-1.0.tar.gz"), None);
        assert_eq!(
            version_for("acmeweb", "acmeweb_extra-1.0-py3-none-any.whl"),
            None
        );
        assert_eq!(version_for("acme", "acme-web-9.0.tar.gz"), None);
        assert_eq!(version_for("acme", "acme-junk.tar.gz"), None);
    }

    #[test]
    fn calver_counts_todays_builds() {
        assert_eq!(
            next_version(VersionScheme::Calver, DAY, &[], Bump::Patch),
            v("2026.11.22.1")
        );
        let existing = [
            v("2026.11.21.7"),
            v("2026.11.22.1"),
            v("2026.11.22.2+fixbug"),
            v("2026.11.22.10"),
            v("1!2026.11.22.50"),
            v("6.11.22.40"),
        ];
        assert_eq!(
            next_version(VersionScheme::Calver, DAY, &existing, Bump::Patch).to_string(),
            "2026.11.22.11"
        );
    }

    #[test]
    fn essay_scheme_has_a_one_digit_year() {
        assert_eq!(
            next_version(VersionScheme::Essay, DAY, &[], Bump::Patch).to_string(),
            "6.11.22.1"
        );
        let existing = [v("6.11.22.3"), v("2026.11.22.9")];
        assert_eq!(
            next_version(VersionScheme::Essay, DAY, &existing, Bump::Patch).to_string(),
            "6.11.22.4"
        );
        let date = LocalDate {
            year: 2030,
            month: 1,
            day: 5,
        };
        assert_eq!(
            next_version(VersionScheme::Essay, date, &[], Bump::Patch).to_string(),
            "0.1.5.1"
        );
    }

    #[test]
    fn semver_bumps_the_highest_final_release() {
        let existing = [
            v("1.2.3"),
            v("1.10.0"),
            v("2.0.0rc1"),
            v("1.10.1+local"),
            v("7"),
        ];
        let next = |bump| next_version(VersionScheme::Semver, DAY, &existing, bump).to_string();
        assert_eq!(next(Bump::Patch), "1.10.1");
        assert_eq!(next(Bump::Minor), "1.11.0");
        assert_eq!(next(Bump::Major), "2.0.0");
        assert_eq!(
            next_version(VersionScheme::Semver, DAY, &[], Bump::Patch).to_string(),
            "0.1.0"
        );
    }

    #[test]
    fn build_names_become_local_versions() {
        let base = v("2026.11.22.1");
        assert_eq!(
            with_local(&base, "fixbug").unwrap().to_string(),
            "2026.11.22.1+fixbug"
        );
        assert_eq!(
            with_local(&base, "Fix_Bug-2").unwrap().to_string(),
            "2026.11.22.1+fix.bug.2"
        );
        assert!(with_local(&base, "fix bug").is_err());
        assert!(with_local(&base, "").is_err());
        assert!(with_local(&v("1.0+a"), "b").is_err());
    }
}
