//! `mms-build secrets init|edit|show-names`: the secrets file, managed the way
//! `ansible-vault` users expect. Plain text only ever exists in a private
//! temporary file for the editor (in RAM under /dev/shm where there is one),
//! removed on every path.

use crate::config::{self, Site};
use crate::secrets::{self, Source};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Secrets subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCmd {
    /// Create the secrets file: opens $EDITOR on a template listing the secrets
    /// this site needs, then encrypts it.
    Init {
        /// Encrypt to this recipient (age1… or an SSH public key); repeatable.
        /// Default: the public key of the identity.
        #[arg(long, short = 'r', value_name = "RECIPIENT")]
        recipient: Vec<String>,
        /// Read the plain YAML from FILE (or - for stdin) instead of running $EDITOR.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Decrypt to a private temporary file, run $EDITOR, validate, re-encrypt.
    Edit,
    /// List the secret names, where each comes from, and which are missing.
    ShowNames,
}

impl SecretsCmd {
    pub fn run(self, config_path: &Path, identity: Option<&Path>) -> Result<ExitCode> {
        let loaded = config::load(config_path).map_err(|e| anyhow!("{e}"))?;
        let site = &loaded.site;
        match self {
            SecretsCmd::Init { recipient, from } => {
                init(site, &loaded.catalog, identity, recipient, from)
            }
            SecretsCmd::Edit => edit(site, &loaded.catalog, identity),
            SecretsCmd::ShowNames => show_names(site, &loaded.catalog, identity),
        }
    }
}

fn recipients_path(site: &Site) -> PathBuf {
    site.secrets_file.with_extension("recipients")
}

fn init(
    site: &Site,
    catalog: &crate::catalog::Catalog,
    identity: Option<&Path>,
    mut recipients: Vec<String>,
    from: Option<PathBuf>,
) -> Result<ExitCode> {
    let file = &site.secrets_file;
    if file.exists() {
        bail!(
            "{} already exists; use `mms-build secrets edit` to change it",
            file.display()
        );
    }
    if recipients.is_empty() {
        let id_path = secrets::identity_path(identity).ok_or_else(|| {
            anyhow!("no recipient: pass --recipient age1… (or an SSH public key), or an identity with --identity")
        })?;
        recipients = secrets::read_identity(&id_path)?.recipients;
        if recipients.is_empty() {
            bail!(
                "{} is an SSH key: pass its public key with --recipient \"$(cat KEY.pub)\"",
                id_path.display()
            );
        }
    }
    for r in &recipients {
        secrets::parse_recipient(r).map_err(|e| anyhow!(e))?;
    }
    let text = match from {
        Some(p) => read_input(&p)?,
        None => {
            let mut template = String::from(
                "# MMS secrets. Values are strings; keep the quotes. Saved encrypted to secrets.age.\n",
            );
            for (name, why) in secrets::required(site, catalog) {
                template.push_str(&format!("# {why}\n{name}: \"\"\n"));
            }
            match edit_loop(&template, |t| validate(site, catalog, t))? {
                Some(t) => t,
                None => {
                    eprintln!("nothing written");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    let values = validate(site, catalog, &text)?;
    let ct = secrets::encrypt(secrets::to_plaintext(&values).as_bytes(), &recipients)?;
    crate::write::write_file_atomic(file, &ct, 0o600)?;
    crate::write::write_file_atomic(
        &recipients_path(site),
        (recipients.join("\n") + "\n").as_bytes(),
        0o644,
    )?;
    println!(
        "wrote {} ({} secrets, encrypted to {} recipient{})",
        file.display(),
        values.len(),
        recipients.len(),
        if recipients.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn edit(
    site: &Site,
    catalog: &crate::catalog::Catalog,
    identity: Option<&Path>,
) -> Result<ExitCode> {
    let file = &site.secrets_file;
    let (old, id) = secrets::decrypt_file(file, identity)?;
    let recipients = match std::fs::read_to_string(recipients_path(site)) {
        Ok(t) => t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        Err(_) if !id.recipients.is_empty() => id.recipients.clone(),
        Err(_) => bail!(
            "{} is missing and the identity is an SSH key: write the recipients (public keys) there, one per line",
            recipients_path(site).display()
        ),
    };
    let Some(new) = edit_loop(&old, |t| validate(site, catalog, t))? else {
        eprintln!("{} unchanged", file.display());
        return Ok(ExitCode::from(1));
    };
    if new == old {
        println!("{}: no changes", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let values = validate(site, catalog, &new)?;
    let ct = secrets::encrypt(new.as_bytes(), &recipients)?;
    crate::write::write_file_atomic(file, &ct, 0o600)?;
    println!("{}: saved ({} secrets)", file.display(), values.len());
    Ok(ExitCode::SUCCESS)
}

fn show_names(
    site: &Site,
    catalog: &crate::catalog::Catalog,
    identity: Option<&Path>,
) -> Result<ExitCode> {
    let s = secrets::load_secrets(site, identity)?;
    let required = secrets::required(site, catalog);
    let mut missing = 0;
    for (name, why) in &required {
        let state = match s.source(name) {
            Some(Source::File) => "set in the file".to_string(),
            Some(Source::Env) => format!("set by MMS_SECRET_{}", name.to_ascii_uppercase()),
            None => {
                missing += 1;
                "MISSING".to_string()
            }
        };
        println!("{name:24} {state:32} ({why})");
    }
    for name in s.names() {
        if !required.iter().any(|(n, _)| n == name) {
            println!("{name:24} {:32} (not needed by this site)", "set");
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Validates edited text: YAML shape, then the site's rules (names only in messages).
fn validate(
    site: &Site,
    catalog: &crate::catalog::Catalog,
    text: &str,
) -> Result<BTreeMap<String, String>> {
    let values = secrets::parse_plaintext(Path::new("(edited secrets)"), text)?;
    let s = secrets::Secrets::from_parts(values.clone(), []);
    let errors: Vec<String> = secrets::check(site, catalog, &s)
        .into_iter()
        .filter(|d| d.severity == crate::yaml::Severity::Error)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(anyhow!("{}", errors.join("\n")))
    }
}

/// Runs $EDITOR on `initial` in a private temp file until the text validates.
/// Returns `None` when the user gives up (the temp file is removed either way).
fn edit_loop(
    initial: &str,
    check: impl Fn(&str) -> Result<BTreeMap<String, String>>,
) -> Result<Option<String>> {
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::Builder::new()
            .prefix("mms-secrets-")
            .tempdir_in(base)
    } else {
        tempfile::Builder::new().prefix("mms-secrets-").tempdir()
    }
    .context("creating a private temporary directory")?;
    set_mode(dir.path(), 0o700)?;
    let path = dir.path().join("secrets.yml");
    let mut text = initial.to_owned();
    loop {
        write_private(&path, text.as_bytes())?;
        run_editor(&path)?;
        text = std::fs::read_to_string(&path).context("reading the edited file")?;
        match check(&text) {
            Ok(_) => return Ok(Some(text)),
            Err(e) => {
                eprintln!("the edited secrets are not valid:\n{e}");
                if !std::io::stdin().is_terminal() || !ask("edit again? [Y/n] ")? {
                    return Ok(None);
                }
            }
        }
    }
}

fn ask(prompt: &str) -> Result<bool> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(!line.trim().eq_ignore_ascii_case("n"))
}

fn run_editor(path: &Path) -> Result<()> {
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    // Through the shell, so `EDITOR="code -w"` works; the path is an argument, not text.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("running the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing was saved");
    }
    Ok(())
}

fn read_input(p: &Path) -> Result<String> {
    let mut s = String::new();
    if p == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
    } else {
        s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    }
    Ok(s)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", p.display()))
}

fn write_private(p: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("writing {}", p.display()))?;
    f.write_all(data)?;
    Ok(())
}
