//! `midge passwd`: manage a password file, with mosquitto_passwd's interface.
//!
//! ```text
//! midge passwd [-H sha512-pbkdf2|sha512] [-I iterations] [-c | -D] passwordfile username
//! midge passwd [-H sha512-pbkdf2|sha512] [-I iterations] [-c] -b passwordfile username password
//! midge passwd [-H sha512-pbkdf2|sha512] [-I iterations] -U passwordfile
//! ```
//!
//! Options are parsed by hand, as mosquitto_passwd does, so that every usage error is a
//! one-line `Error: ...` and exit code 1. Files are written atomically with mode 0600.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use midge_auth::{
    DEFAULT_ITERATIONS, HashAlgorithm, MAX_ITERATIONS, PasswdDocument, PasswordHash,
    validate_username, write_atomic,
};

const USAGE: &str = "\
midge passwd manages password files for midge and mosquitto (same file format).

Usage: midge passwd [-H sha512-pbkdf2 | -H sha512] [-I iterations] [-c | -D] passwordfile username
       midge passwd [-H sha512-pbkdf2 | -H sha512] [-I iterations] [-c] -b passwordfile username password
       midge passwd [-H sha512-pbkdf2 | -H sha512] [-I iterations] -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
      sha512 is mosquitto 1.6's weak format, for old brokers only.
 -I : PBKDF2 iteration count (default 210000, OWASP's recommendation for PBKDF2-SHA512).
 -U : update a plain text password file to use hashed passwords.

Without -b the password is asked twice on the terminal; when standard input is not a
terminal, it is read from the first line of standard input (a second line, if present,
must repeat it).";

/// Arguments: mosquitto_passwd's flags and positionals, parsed by hand (see [`USAGE`]).
/// `Debug` does not show them: with `-b` they hold a password.
#[derive(clap::Args)]
#[command(after_help = USAGE)]
pub(crate) struct PasswdArgs {
    /// [-H sha512-pbkdf2|sha512] [-I iterations] [-c | -D | -b | -U] passwordfile [username [password]]
    #[arg(
        value_name = "ARGS",
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

impl std::fmt::Debug for PasswdArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswdArgs")
            .field("args", &format_args!("<{} redacted>", self.args.len()))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Add or update a user (optionally creating the file).
    Set { create: bool, batch: bool },
    /// Delete a user.
    Delete,
    /// Hash a plain-text file in place.
    UpdatePlain,
}

/// Parsed options (no `Debug`: the positionals may hold a password).
struct Options {
    mode: Mode,
    algorithm: HashAlgorithm,
    iterations: u32,
    positionals: Vec<String>,
}

/// A usage error: print it and the usage text, exit 1.
#[derive(Debug)]
struct UsageError(String);

fn parse_options(args: &[String]) -> Result<Options, UsageError> {
    let (mut batch, mut create, mut delete, mut update) = (false, false, false, false);
    let mut algorithm = HashAlgorithm::Sha512Pbkdf2;
    let mut iterations = DEFAULT_ITERATIONS;
    let mut rest = args.iter();
    let mut positionals = Vec::new();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-b" => batch = true,
            "-c" => create = true,
            "-D" => delete = true,
            "-U" => update = true,
            "-H" => {
                let Some(v) = rest.next() else {
                    return Err(UsageError(
                        "-H argument given but no hash algorithm specified.".into(),
                    ));
                };
                algorithm = v.parse().map_err(|_| {
                    UsageError(format!(
                        "Unknown hash algorithm '{v}' (use sha512-pbkdf2 or sha512)."
                    ))
                })?;
            }
            "-I" => {
                let Some(v) = rest.next() else {
                    return Err(UsageError(
                        "-I argument given but no iteration count specified.".into(),
                    ));
                };
                iterations = match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_ITERATIONS).contains(&n) => n,
                    _ => {
                        return Err(UsageError(format!(
                            "Number of iterations must be from 1 to {MAX_ITERATIONS}."
                        )));
                    }
                };
            }
            "--" => {
                positionals.extend(rest.by_ref().cloned());
            }
            s if s.starts_with('-') && s.len() > 1 && positionals.is_empty() => {
                return Err(UsageError(format!("Unknown option '{s}'.")));
            }
            _ => {
                positionals.push(arg.clone());
                // Like mosquitto_passwd, options come before the file name; after it,
                // everything is positional (a password may start with '-').
                positionals.extend(rest.by_ref().cloned());
            }
        }
    }
    if create && delete {
        return Err(UsageError("-c and -D cannot be used together.".into()));
    }
    if delete && batch {
        return Err(UsageError("-b and -D cannot be used together.".into()));
    }
    if update && (create || delete || batch) {
        return Err(UsageError("-U cannot be used with -b, -c or -D.".into()));
    }
    let (mode, want) = if update {
        (Mode::UpdatePlain, 1)
    } else if delete {
        (Mode::Delete, 2)
    } else {
        (Mode::Set { create, batch }, if batch { 3 } else { 2 })
    };
    if positionals.len() != want {
        return Err(UsageError(format!(
            "expected {want} argument{} after the options, got {}.",
            if want == 1 { "" } else { "s" },
            positionals.len()
        )));
    }
    Ok(Options {
        mode,
        algorithm,
        iterations,
        positionals,
    })
}

pub(crate) fn run(args: PasswdArgs) -> anyhow::Result<ExitCode> {
    let opts = match parse_options(&args.args) {
        Ok(o) => o,
        Err(UsageError(msg)) => {
            eprintln!("Error: {msg} Run 'midge passwd --help' for usage.");
            return Ok(ExitCode::from(1));
        }
    };
    let mut pos = opts.positionals.iter().map(String::as_str);
    let file = Path::new(pos.next().unwrap_or_default());
    let username = pos.next();
    let batch_password = pos.next();

    if let Some(user) = username
        && let Err(e) = validate_username(user)
    {
        bail!("Invalid username: {e}.");
    }

    let mut doc = match opts.mode {
        Mode::Set { create: true, .. } => PasswdDocument::new(),
        _ => read_document(file)?,
    };

    match opts.mode {
        Mode::Delete => {
            let user = username.unwrap_or_default();
            if !doc.remove(user) {
                bail!("User {user} not found in password file.");
            }
        }
        Mode::Set { batch, .. } => {
            let user = username.unwrap_or_default();
            let password = match (batch, batch_password) {
                (true, Some(p)) => p.to_owned(),
                _ => read_password()?,
            };
            check_password(&password)?;
            let hash = PasswordHash::create(password.as_bytes(), opts.algorithm, opts.iterations)
                .context("cannot hash the password")?;
            doc.set(user, &hash);
        }
        Mode::UpdatePlain => {
            let report = doc
                .hash_plaintext(opts.algorithm, opts.iterations)
                .context("cannot hash the passwords")?;
            if report.already_hashed > 0 {
                eprintln!(
                    "Warning: {} line(s) in {} already hold a password hash and were left unchanged.",
                    report.already_hashed,
                    file.display()
                );
            }
        }
    }

    let outcome = write_atomic(file, doc.render().as_bytes())
        .with_context(|| format!("Unable to write password file {}", file.display()))?;
    if outcome.was_world_readable() {
        eprintln!(
            "Warning: password file {} was world readable (mode {:04o}); its permissions are now 0600.",
            file.display(),
            outcome.previous_mode.unwrap_or_default()
        );
    }
    if !outcome.owner_preserved {
        eprintln!(
            "Warning: could not keep the owner of {}; it now belongs to the current user.",
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_document(file: &Path) -> anyhow::Result<PasswdDocument> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("Unable to open password file {}", file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("Password file {} is not valid UTF-8.", file.display()))?;
    Ok(PasswdDocument::parse(&text))
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.is_empty() {
        bail!("Empty password.");
    }
    if password.len() > 65_535 {
        bail!("Password too long (at most 65535 bytes).");
    }
    if password.contains(['\n', '\r']) {
        bail!("Password must not contain line breaks.");
    }
    Ok(())
}

/// Ask twice on the terminal, or read from standard input when it is not a terminal.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read password")?;
        let second =
            rpassword::prompt_password("Reenter password: ").context("cannot read password")?;
        if first != second {
            bail!("Passwords do not match.");
        }
        return Ok(first);
    }
    let mut lines = stdin.lock().lines();
    let first = match lines.next() {
        Some(line) => line.context("cannot read password from standard input")?,
        None => bail!("No password given on standard input."),
    };
    let first = first.strip_suffix('\r').unwrap_or(&first).to_owned();
    if let Some(second) = lines.next() {
        let second = second.context("cannot read password from standard input")?;
        if second.strip_suffix('\r').unwrap_or(&second) != first {
            bail!("Passwords do not match.");
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, UsageError> {
        parse_options(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn mosquitto_passwd_forms_parse() {
        let o = parse(&["-c", "f", "u"]).unwrap();
        assert_eq!(
            o.mode,
            Mode::Set {
                create: true,
                batch: false
            }
        );
        assert_eq!(o.iterations, DEFAULT_ITERATIONS);
        assert_eq!(o.algorithm, HashAlgorithm::Sha512Pbkdf2);
        let o = parse(&["-H", "sha512", "-b", "f", "u", "-p-"]).unwrap();
        assert_eq!(o.algorithm, HashAlgorithm::Sha512);
        assert_eq!(o.positionals, ["f", "u", "-p-"]);
        let o = parse(&["-I", "5000", "-D", "f", "u"]).unwrap();
        assert_eq!((o.mode, o.iterations), (Mode::Delete, 5000));
        assert_eq!(parse(&["-U", "f"]).unwrap().mode, Mode::UpdatePlain);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["-c", "-D", "f", "u"][..],
            &["-b", "-D", "f", "u", "p"],
            &["-U", "-c", "f"],
            &["-U", "f", "u"],
            &["f"],
            &["-b", "f", "u"],
            &["-H", "md5", "f", "u"],
            &["-H"],
            &["-I", "0", "f", "u"],
            &["-I", "x", "f", "u"],
            &["-I", "3000000000", "f", "u"],
            &["-x", "f", "u"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
