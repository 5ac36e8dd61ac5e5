//! End-to-end tests: the real server on a real socket (port 0), spoken to
//! over HTTP/1.1 and HTTP/2. One test binary; each module is one surface.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod h2c;
mod pki;
mod support;
mod tls;

mod authzen;
mod authzen_cert;
mod authzen_gateway;
mod authzen_idp;
mod authzen_search;
mod authzen_todo;
mod bad_input;
mod bus;
mod cli;
mod connections;
mod disclosure;
mod docs;
mod file_store;
mod fleet;
mod gateway;
mod history;
mod hostile;
mod http2;
mod layers;
mod native;
mod openapi;
mod operations;
mod otel;
mod own_pack;
mod policy_gate;
mod policy_pack;
mod property;
mod readme;
mod replay;
mod revocation_race;
mod search_brokerage;
mod search_fanout;
mod shadow;
mod upstream;
mod verify;
