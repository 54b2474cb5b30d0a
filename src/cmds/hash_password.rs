//! `camstream hash-password`: turns a password into the argon2 PHC string
//! that `[[server.auth.users]] password_hash` takes.
//!
//! At a terminal it prompts twice without echo; otherwise it reads one line
//! of standard input (`printf '%s\n' "$PW" | camstream hash-password`), so
//! the password never has to appear on a command line, where `ps` and the
//! shell's history would show it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

/// Reads the password and writes the `password_hash = "..."` value to `out`.
pub fn run(out: &mut impl Write) -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Same again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ: nothing was hashed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line)
            .to_string()
    };
    if password.is_empty() {
        bail!("the password is empty: type one, or pipe one line into camstream hash-password");
    }
    let hash = crate::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    writeln!(out, "{hash}")?;
    Ok(())
}
