//! The command line of MODERATION.md: `operator add|set-role|disable|enable|list`,
//! `player`, `ban`, `unban`, `mute`, `unmute`, `kick`, `reset-name`, `audit`. Same
//! configuration as the nodes, same effects through `Moderation`, audited as
//! `cli:<os user>` with the admin role. A password is never taken from a flag: it is
//! read from the terminal with echo off, or from stdin when that is not a terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::http::entry_json;
use super::{Admin, ApiError};
use crate::config::Settings;
use crate::moderation::{Action, Actor, Role};
use crate::store::admin::AuditQuery;
use crate::store::Stores;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage operators of the admin API and console.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The player 360: account, live sessions, matchmaking, ban, mute, audit.
    Player {
        name: String,
        /// As JSON (the API's shape).
        #[arg(long)]
        json: bool,
    },
    /// Ban an account: its sessions end everywhere and it cannot log in.
    Ban(BanArgs),
    /// Lift an account's ban.
    Unban(ReasonArgs),
    /// Mute an account: its chat is refused.
    Mute(MuteArgs),
    /// Lift an account's mute.
    Unmute(ReasonArgs),
    /// End every live session of an account (it may log in again).
    Kick(ReasonArgs),
    /// Give the account's sessions their account name back as display name.
    ResetName(ReasonArgs),
    /// The audit log, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator; the password is read from the terminal (or stdin).
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Change an operator's role.
    SetRole {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Disable an operator: its sessions end at once.
    Disable { name: String },
    /// Enable a disabled operator.
    Enable { name: String },
    /// Set an operator's password (read from the terminal or stdin): its sessions end.
    Password { name: String },
    /// Every operator.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct ReasonArgs {
    pub name: String,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["for_", "permanent"])))]
pub struct BanArgs {
    pub name: String,
    /// How long: `7d`, `12h`, `30m`…
    #[arg(long = "for", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    #[arg(long)]
    pub permanent: bool,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct MuteArgs {
    pub name: String,
    /// How long: `1h`, `30m`, `2d`…
    #[arg(long = "for", value_parser = parse_duration)]
    pub for_: Duration,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only entries about this player.
    #[arg(long)]
    pub player: Option<String>,
    /// Only entries by this operator (`cli:<user>` for the command line).
    #[arg(long)]
    pub operator: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 7d, 12h, 30m)"))?;
    if d.as_secs() == 0 {
        return Err("at least one second".into());
    }
    Ok(d)
}

/// Runs one admin command.
pub async fn run(settings: &Settings, command: AdminCommand) -> Result<(), String> {
    let config = &settings.config;
    let stores = Stores::connect(config).map_err(|e| e.to_string())?;
    // The first admin may be created before any node started: the schema first.
    stores.users.migrate().await.map_err(|e| e.to_string())?;
    let admin = Admin::new(settings, &stores, config.node_id());
    let actor = Actor { name: format!("cli:{}", os_user()), role: Role::Admin, address: None };
    let failed = |e: ApiError| e.message;
    let act = |name: String, action: Action, reason: String| {
        let (admin, actor) = (&admin, &actor);
        async move {
            let acted = admin.act(actor, &name, action, &reason).await.map_err(failed)?;
            let until = acted.until.as_deref().map(|u| format!(" until {u}")).unwrap_or_default();
            println!("{} {}{until}: {} live session(s) reached", acted.action, acted.player, acted.sessions);
            Ok(())
        }
    };
    match command {
        AdminCommand::Operator(command) => operator(&admin, &actor, command).await,
        AdminCommand::Player { name, json } => {
            let view = admin.moderation.player(&name).await.map_err(|e| ApiError::from(e).message)?;
            let query = AuditQuery { player: Some(view.account.username.clone()), limit: 50, ..Default::default() };
            let entries = admin.audit.entries(&query).await.map_err(|e| e.to_string())?;
            let mut body = serde_json::to_value(&view).map_err(|e| e.to_string())?;
            body["audit"] = entries.iter().map(entry_json).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
            } else {
                print_player(&body);
            }
            Ok(())
        }
        AdminCommand::Ban(a) => act(a.name, Action::Ban { secs: a.for_.map(|d| d.as_secs()) }, a.reason).await,
        AdminCommand::Unban(a) => act(a.name, Action::Unban, a.reason).await,
        AdminCommand::Mute(a) => act(a.name, Action::Mute { secs: a.for_.as_secs() }, a.reason).await,
        AdminCommand::Unmute(a) => act(a.name, Action::Unmute, a.reason).await,
        AdminCommand::Kick(a) => act(a.name, Action::Kick, a.reason).await,
        AdminCommand::ResetName(a) => act(a.name, Action::ResetName, a.reason).await,
        AdminCommand::Audit(a) => {
            let query = AuditQuery { player: a.player, operator: a.operator, before: None, limit: a.limit };
            let entries = admin.audit.entries(&query).await.map_err(|e| e.to_string())?;
            if a.json {
                let all: Vec<Value> = entries.iter().map(entry_json).collect();
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            }
            for e in entries.iter().filter(|_| !a.json) {
                println!(
                    "{:>6}  {}  {:<16} {:<16} {:<16} {:<8} {:<15} {}",
                    e.id,
                    crate::moderation::rfc3339(e.at),
                    e.operator,
                    e.action,
                    e.target.as_deref().unwrap_or("-"),
                    e.outcome.as_str(),
                    e.address.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

async fn operator(admin: &Admin, actor: &Actor, command: OperatorCommand) -> Result<(), String> {
    let show = |o: &crate::store::admin::OperatorRecord| {
        let state = if o.disabled { "disabled" } else { "enabled" };
        println!(
            "{:<24} {:<10} {:<9} created {}",
            o.name,
            o.role.as_str(),
            state,
            crate::moderation::rfc3339(o.created_at)
        );
    };
    let record = match command {
        OperatorCommand::Add { name, role } => {
            super::check_operator_name(&name).map_err(|e| e.message)?;
            let password = read_password(&format!("Password for operator {name}: "))?;
            admin.add_operator(actor, &name, role, &password).await
        }
        OperatorCommand::SetRole { name, role } => admin.update_operator(actor, &name, Some(role), None, None).await,
        OperatorCommand::Disable { name } => admin.update_operator(actor, &name, None, Some(true), None).await,
        OperatorCommand::Enable { name } => admin.update_operator(actor, &name, None, Some(false), None).await,
        OperatorCommand::Password { name } => {
            let password = read_password(&format!("New password for operator {name}: "))?;
            admin.update_operator(actor, &name, None, None, Some(&password)).await
        }
        OperatorCommand::List => {
            for o in admin.operators.list_operators().await.map_err(|e| e.to_string())? {
                show(&o);
            }
            return Ok(());
        }
    };
    let record = record.map_err(|e| e.message)?;
    show(&record);
    Ok(())
}

/// A password from the terminal (echo off, asked twice) or, when stdin is not a
/// terminal, its first line.
fn read_password(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    let first = read_hidden(prompt)?;
    let second = read_hidden("Again: ")?;
    if first != second {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

/// One line from the terminal with echo off.
fn read_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr only read and write the termios struct given.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err("cannot turn terminal echo off".into());
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The name of the user running this process.
pub fn os_user() -> String {
    // SAFETY: getpwuid_r writes into the buffers given, and the name it points to
    // lives in `buf`, read before `buf` goes.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) == 0 && !result.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned();
        }
        format!("uid{uid}")
    }
}

fn print_player(body: &Value) {
    let s = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let account = &body["account"];
    println!("{} (id {})", s(&account["username"]), s(&account["id"]));
    println!("  email       {}", s(&account["email"]));
    println!("  created     {}", s(&account["created"]));
    println!("  last login  {}", s(&account["last_login"]));
    let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
    println!("sessions: {}", sessions.len());
    for x in &sessions {
        println!(
            "  {} as {} from {} since {} ({})",
            s(&x["node"]),
            s(&x["display_name"]),
            s(&x["address"]),
            s(&x["connected_since"]),
            s(&x["auth"])
        );
    }
    match &body["matchmaking"] {
        Value::Null => println!("matchmaking: -"),
        m => println!(
            "matchmaking: queue {} position {} waiting {}s match {}",
            s(&m["queue"]),
            s(&m["position"]),
            s(&m["waiting_secs"]),
            s(&m["pending_match"])
        ),
    }
    for kind in ["ban", "mute"] {
        match &body[kind] {
            Value::Null => println!("{kind}: -"),
            b => println!(
                "{kind}: until {} by {} at {}: {}",
                if b["until"].is_null() { "forever".to_owned() } else { s(&b["until"]) },
                s(&b["by"]),
                s(&b["at"]),
                s(&b["reason"])
            ),
        }
    }
    println!("failed logins: {}", s(&body["failed_logins"]));
    println!("audit:");
    for e in body["audit"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {} {} {} {} {}",
            s(&e["at"]),
            s(&e["operator"]),
            s(&e["action"]),
            s(&e["outcome"]),
            s(&e["reason"])
        );
    }
}
