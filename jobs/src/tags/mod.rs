//! `dwh tags`: the user tags for the application — the rules that grant them, and one user's.
//!
//! The tags themselves are computed by the CDM job (`cdm.user_tags`), and every change of them is
//! published to the tags topic ([`events`]). `dwh tags rules` lists and changes the rules
//! ([`manage`], applied by every recompute as [`rules`] reads them); `dwh tags show USER_ID`
//! looks a user up by the id the application knows ([`show`]).

pub mod events;
mod manage;
pub mod rules;
mod show;

use anyhow::Result;
use dwh_shared::config::{Kafka, Postgres};

/// `dwh tags`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List the tag rules, or change one: `rules set TAG …`, `rules remove TAG`
    Rules(Box<manage::Args>),
    /// A user's tags, with the order counts behind them, and how far the user is from the others
    Show(show::Args),
}

/// What the command was given cannot be done (a bad pattern, an unknown category or tag): one
/// line, exit code 2, nothing changed.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl Args {
    /// The command's name in its error lines.
    pub fn name(&self) -> &'static str {
        match &self.command {
            Command::Rules(a) => match &a.change {
                None => "tags rules",
                Some(manage::Change::Set(_)) => "tags rules set",
                Some(manage::Change::Remove(_)) => "tags rules remove",
            },
            Command::Show(_) => "tags show",
        }
    }

    /// The services this command talks to.
    pub fn endpoints(&self) -> (&Postgres, Option<&Kafka>) {
        match &self.command {
            Command::Rules(a) => a.endpoints(),
            Command::Show(a) => (&a.pg, None),
        }
    }
}

pub async fn run(args: &Args) -> Result<String> {
    match &args.command {
        Command::Rules(a) => manage::run(a).await,
        Command::Show(a) => show::run(a).await,
    }
}
