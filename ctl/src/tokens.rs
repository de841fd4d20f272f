//! `upkeepctl tokens`: store a refresh token, list credentials (never a secret), print the
//! current access token, forget a credential, re-encrypt every row under a new key. The work
//! is `upkeep_shared::tokens::admin`.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use upkeep_shared::config::Settings;
use upkeep_shared::tokens::{Keyring, admin};

/// Arguments of `upkeepctl tokens`.
#[derive(Debug, Args)]
pub(crate) struct TokensArgs {
    #[command(subcommand)]
    action: Option<TokensAction>,
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Store a refresh token for a configured provider (read from stdin, never an argument).
    Add {
        /// The provider's name in [[tokens.providers]].
        provider: String,
        /// Read the refresh token from standard input (required: a token given as an argument
        /// would land in the shell history and the process list).
        #[arg(long, required = true)]
        refresh_token_stdin: bool,
    },
    /// Credentials with their status, expiry and failures; never a secret (default).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the current access token of a provider, for scripts.
    Get {
        /// The provider.
        provider: String,
    },
    /// Forget a provider's stored credential.
    Revoke {
        /// The provider.
        provider: String,
    },
    /// Re-encrypt every credential under UPKEEP_SECRET_KEY; rows under
    /// UPKEEP_SECRET_KEY_PREVIOUS are read with it.
    RotateKey {
        /// Rows per batch.
        #[arg(long, default_value_t = 100)]
        batch: i64,
    },
}

/// Runs one `tokens` verb.
pub(crate) async fn run(settings: &Settings, args: TokensArgs) -> anyhow::Result<()> {
    let pool = upkeep_shared::store::connect(&settings.database).await?;
    match args.action.unwrap_or(TokensAction::List { json: false }) {
        TokensAction::Add {
            provider,
            refresh_token_stdin,
        } => {
            if !refresh_token_stdin {
                bail!("give the refresh token on stdin with --refresh-token-stdin");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the refresh token from stdin")?;
            let token = SecretString::from(text.trim().to_owned());
            drop(text);
            let version = admin::add(
                &pool,
                &settings.tokens,
                &keyring(settings)?,
                &provider,
                &token,
            )
            .await?;
            println!("stored a refresh token for {provider} (token_version {version})");
        }
        TokensAction::List { json } => {
            let infos = admin::list(&pool, &settings.tokens).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else if infos.is_empty() {
                println!("no credentials configured or stored");
            } else {
                println!(
                    "{:<20} {:<13} {:>7} {:<25} {:<25} {:>8}  last error",
                    "PROVIDER", "STATUS", "VERSION", "EXPIRES", "NEXT REFRESH", "FAILURES"
                );
                for info in infos {
                    let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
                        at.map_or_else(|| "-".to_owned(), |at| at.format("%F %T UTC").to_string())
                    };
                    println!(
                        "{:<20} {:<13} {:>7} {:<25} {:<25} {:>8}  {}{}",
                        info.provider,
                        info.status,
                        info.token_version
                            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                        time(info.expires_at),
                        time(info.next_refresh_at),
                        info.consecutive_failures,
                        info.last_error.as_deref().unwrap_or("-"),
                        if info.configured {
                            ""
                        } else {
                            " (not configured)"
                        },
                    );
                }
            }
        }
        TokensAction::Get { provider } => {
            let token = admin::get(&pool, &keyring(settings)?, &provider).await?;
            println!("{}", token.token.expose_secret());
        }
        TokensAction::Revoke { provider } => {
            if admin::revoke(&pool, &provider).await? {
                println!("forgot the credential of {provider}");
            } else {
                bail!("no credential stored for {provider:?}");
            }
        }
        TokensAction::RotateKey { batch } => {
            let report = admin::rotate_key(&pool, &keyring(settings)?, batch).await?;
            println!(
                "re-encrypted {} credentials under key {}",
                report.n_reencrypted, report.key_id
            );
            if !report.failed.is_empty() {
                for (provider, error) in &report.failed {
                    eprintln!("{provider}: {error}");
                }
                bail!(
                    "{} credentials could not be re-encrypted (they decrypt with neither key)",
                    report.failed.len()
                );
            }
        }
    }
    Ok(())
}

fn keyring(settings: &Settings) -> anyhow::Result<Keyring> {
    Ok(upkeep_shared::tokens::keyring(settings)?)
}
