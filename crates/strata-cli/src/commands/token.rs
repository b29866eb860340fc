//! `strata token new`: a random API token, and the config entry holding its hash.

use anyhow::Result;
use clap::Subcommand;

use crate::output::Printer;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a new random token; prints it once, with the config entry holding its hash.
    New {
        /// A name for logs.
        #[arg(long, default_value = "client")]
        name: String,
        /// reader, writer or admin.
        #[arg(long, default_value = "reader")]
        role: String,
        /// Limit the role to streams starting with this (repeatable; default: every stream).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
}

pub fn run(command: &TokenCommand, p: &Printer) -> Result<()> {
    let TokenCommand::New {
        name,
        role,
        prefixes,
    } = command;
    let role = match role.as_str() {
        "reader" | "writer" | "admin" => role.clone(),
        r => anyhow::bail!("--role must be reader, writer or admin, not {r:?}"),
    };
    let token = strata_server::new_token();
    let hash = strata_server::hash_token(&token);
    let prefixes = if prefixes.is_empty() {
        String::new()
    } else {
        format!("prefixes = {}\n", serde_json::to_string(prefixes)?)
    };
    if p.is_json() {
        println!(
            "{}",
            serde_json::json!({"token": token, "sha256": hash, "name": name, "role": role})
        );
    } else {
        println!("token (give it to the client; it is not stored anywhere): {token}\n");
        println!("add to the server's config file:\n\n[[tokens]]\nname = {name:?}\nsha256 = \"{hash}\"\nrole = \"{role}\"\n{prefixes}");
    }
    Ok(())
}
