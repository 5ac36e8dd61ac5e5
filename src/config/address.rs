//! Listen addresses: `IP:PORT`, or `HOST:PORT` resolved once at start
//! (`localhost:8180`, a pod's hostname). A name that resolves to several
//! addresses binds the first IPv4 one (else the first), as most servers do.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer, Serializer};

/// `text` as one socket address, resolving a host name.
///
/// # Errors
/// Text that is neither, or a name that does not resolve.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let found: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| format!("`{text}` is not an address `HOST:PORT`: {error}"))?
        .collect();
    found
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// `#[serde(with)]` for a `SocketAddr` written as text.
pub(super) mod one {
    use super::{Deserialize, Deserializer, Serializer, SocketAddr, resolve};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        resolve(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(address: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(address)
    }
}

/// `#[serde(with)]` for an optional `SocketAddr` written as text.
pub(super) mod optional {
    use super::{Deserialize, Deserializer, Serializer, SocketAddr, resolve};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| resolve(&text).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn serialize<S: Serializer>(address: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => s.collect_str(address),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn host_names_resolve_and_addresses_parse() {
        assert_eq!(
            resolve("localhost:8180").unwrap().to_string(),
            "127.0.0.1:8180"
        );
        assert_eq!(resolve("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
        assert_eq!(resolve("[::1]:2").unwrap().to_string(), "[::1]:2");
        let error = resolve("localhost").unwrap_err();
        assert!(error.contains("`localhost`"), "{error}");
        assert!(resolve("no-such-host.invalid:80").is_err());
    }
}
