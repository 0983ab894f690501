//! The errors that decide the exit status: bad usage or configuration exits 2,
//! a failed host or step exits 1.

use std::fmt;
use std::path::PathBuf;

/// Bad usage or a bad configuration, found before any host was contacted (exit 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A configuration error (exit 2): file, line and column when known, key,
/// and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<(usize, usize)>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.line {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Returns early with a [`BadInput`] error.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => {
        return Err($crate::error::BadInput(format!($($arg)*)).into())
    };
}

/// The exit status for an error: 2 for bad input, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let bad = err.chain().any(|cause| {
        cause.downcast_ref::<BadInput>().is_some() || cause.downcast_ref::<ConfigError>().is_some()
    });
    if bad {
        2
    } else {
        1
    }
}
