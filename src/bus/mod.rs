//! Entity change events over NATS: the system of record publishes which
//! entities changed, every replica forgets them (and everything built from
//! them) before its next decision reads them. Core NATS, at most once: an
//! event is an invalidation, so a replica that may have missed one (a
//! revision gap, a reconnect, a slow-consumer drop) forgets everything
//! instead, and while the bus is down entities stay fresh for
//! `cache.ttl_without_bus` only. ARCHITECTURE.md weighs this against
//! JetStream and polling.

mod event;
pub mod history;
mod subscriber;

use std::path::PathBuf;

pub use event::{
    ChangeEvent, Changed, Continuity, EventUid, Ignored, MAX_EVENT_BYTES, MAX_EVENT_UIDS, Revisions,
};
pub use subscriber::subscribe;

/// How to reach the bus.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// `nats://host:4222` or `tls://host:4222`, perhaps with `user:pass@`
    /// or `token@`
    pub url: String,
    /// the subject events are published on
    pub subject: String,
    /// a `.creds` file (JWT and nkey seed)
    pub credentials_file: Option<PathBuf>,
    /// CA certificates for the server; requires TLS
    pub tls_ca: Option<PathBuf>,
}

/// The bus could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// the credentials file could not be read
    #[error("cannot read the NATS credentials file `{path}`: {source}")]
    Credentials {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// connecting failed
    #[error("cannot connect to NATS at `{url}`: {message}")]
    Connect {
        /// where, without credentials
        url: String,
        /// why
        message: String,
    },
    /// publishing failed
    #[error("cannot publish on `{subject}`: {message}")]
    Publish {
        /// the subject
        subject: String,
        /// why
        message: String,
    },
}

/// A URL's credentials, taken out of it: NATS clients do not read them
/// from the URL themselves.
#[derive(Debug, PartialEq, Eq)]
enum UrlAuth {
    None,
    UserPassword(String, String),
    Token(String),
}

/// `nats://user:pass@host:4222` → (`nats://host:4222`, user and password).
fn split_auth(url: &str) -> (String, UrlAuth) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), UrlAuth::None);
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_owned(), UrlAuth::None);
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = match userinfo.split_once(':') {
        Some((user, password)) => UrlAuth::UserPassword(decode(user), decode(password)),
        None => UrlAuth::Token(decode(userinfo)),
    };
    (format!("{scheme}://{host}{path}"), auth)
}

/// The connection options every use of the bus shares: credentials from
/// the URL or the file, TLS when a CA is given or the scheme is `tls`.
async fn options(
    settings: &BusSettings,
    name: &str,
) -> Result<(String, async_nats::ConnectOptions), BusError> {
    let (url, auth) = split_auth(&settings.url);
    let mut options = async_nats::ConnectOptions::new().name(name);
    options = match auth {
        UrlAuth::None => options,
        UrlAuth::UserPassword(user, password) => options.user_and_password(user, password),
        UrlAuth::Token(token) => options.token(token),
    };
    if let Some(path) = &settings.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(ca) = &settings.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if url.starts_with("tls://") {
        options = options.require_tls(true);
    }
    Ok((url, options))
}

/// Connects with `options` to `url` (credentials already taken out of it).
async fn connect(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, BusError> {
    options.connect(url).await.map_err(|e| BusError::Connect {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

/// Publishes `event` on the subject and waits until the server has it.
///
/// # Errors
/// The bus cannot be reached or refuses the publication.
pub async fn publish(settings: &BusSettings, event: &ChangeEvent) -> Result<(), BusError> {
    let (url, options) = options(settings, "mandate-publish").await?;
    let client = connect(&url, options).await?;
    let failed = |e: &dyn std::fmt::Display| BusError::Publish {
        subject: settings.subject.clone(),
        message: e.to_string(),
    };
    client
        .publish(settings.subject.clone(), event.encode().into())
        .await
        .map_err(|e| failed(&e))?;
    client.flush().await.map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_taken_out_of_it() {
        assert_eq!(
            split_auth("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), UrlAuth::None)
        );
        assert_eq!(
            split_auth("nats://mandate:s%40cret@bus:4222"),
            (
                "nats://bus:4222".to_owned(),
                UrlAuth::UserPassword("mandate".to_owned(), "s@cret".to_owned())
            )
        );
        assert_eq!(
            split_auth("tls://t0ken@bus.internal:4222/"),
            (
                "tls://bus.internal:4222/".to_owned(),
                UrlAuth::Token("t0ken".to_owned())
            )
        );
    }
}
