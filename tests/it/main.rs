//! Every integration test, in one test binary: one compile of the shared fixtures
//! and one link instead of one per file. Each file is a module named for its concern
//! (`cargo test --test it abuse_login::` runs one); the fixtures are `common`.

mod common;

mod abuse;
mod abuse_chat;
mod abuse_login;
mod abuse_matches;
mod abuse_transport;
mod admin;
mod agones;
mod cluster;
mod console;
mod contract;
mod contract_admin;
mod contract_moderation;
mod drain;
mod faults;
mod hostile;
mod lifecycle;
mod matchmaking;
mod matchmaking_inproc;
mod metrics;
mod moderation;
mod protocol;
mod resume;
mod revoke;
mod scale;
mod seeds;
mod takeover;
mod through_nginx;
mod tls;
mod topologies;
