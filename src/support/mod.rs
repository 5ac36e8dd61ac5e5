//! Helpers more than one layer uses, knowing nothing of decisions: the
//! shipped pack inside the binary (`embedded.rs`, read by `config` and the
//! pack loaders), PEM files into rustls configurations (`tls.rs`: the
//! listeners' in `server`, the store client's in `entities`), and a check
//! run on a timer while its target lives (`periodic.rs`: the file,
//! certificate and policy watchers), and JSON written by hand for the
//! texts every decision writes (`json.rs`: its answer and its log line).

pub mod embedded;
pub mod json;
pub mod periodic;
pub mod tls;
