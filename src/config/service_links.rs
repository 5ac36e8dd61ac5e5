//! Kubernetes' service-link variables. A kubelet gives every pod, for every
//! Service in its namespace, variables named after the Service: a Service
//! called `mandate` or `mandate-store` yields `MANDATE_SERVICE_HOST`,
//! `MANDATE_STORE_PORT_8180_TCP_ADDR`, …, which share our settings' prefix.
//! They are recognised by name *and* value, so a mistyped setting is still
//! refused, and ignored: they are not settings.

/// Whether `(name, value)` is a variable a kubelet injects for a Service
/// whose name is `mandate` or starts with `mandate-`.
pub(super) fn is_service_link(name: &str, value: &str) -> bool {
    let Some(rest) = name.strip_prefix("MANDATE") else {
        return false;
    };
    // The Service's name after `mandate`, upper-cased, `-` become `_`: empty
    // or `_STORE…`; then one of the shapes below. Try every split, since
    // a Service's name may itself contain `_PORT` or `_SERVICE`.
    rest.char_indices()
        .filter(|&(at, c)| at == 0 || c == '_')
        .any(|(at, _)| {
            let (service, shape) = rest.split_at(at);
            is_service_suffix(service) && is_link(shape, value)
        })
}

/// The tail of a Service name after `mandate`: empty, or `_` then
/// upper-case letters, digits and `_` (a DNS label, transformed).
fn is_service_suffix(tail: &str) -> bool {
    tail.is_empty()
        || tail.strip_prefix('_').is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// One of the documented shapes, with the value it carries.
fn is_link(shape: &str, value: &str) -> bool {
    match shape {
        "_SERVICE_HOST" => is_ip(value),
        "_SERVICE_PORT" => is_port(value),
        "_PORT" => is_url(value, None),
        _ => {
            if let Some(port_name) = shape.strip_prefix("_SERVICE_PORT_") {
                return !port_name.is_empty() && is_port(value);
            }
            let Some(port) = shape.strip_prefix("_PORT_") else {
                return false;
            };
            let Some((number, proto_and_field)) = port.split_once('_') else {
                return false;
            };
            if !is_port(number) {
                return false;
            }
            let (proto, field) = proto_and_field
                .split_once('_')
                .map_or((proto_and_field, None), |(p, f)| (p, Some(f)));
            if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                return false;
            }
            match field {
                None => is_url(value, Some((proto, number))),
                Some("ADDR") => is_ip(value),
                Some("PORT") => value == number,
                Some("PROTO") => value.eq_ignore_ascii_case(proto),
                Some(_) => false,
            }
        }
    }
}

fn is_ip(value: &str) -> bool {
    value.parse::<std::net::IpAddr>().is_ok()
}

fn is_port(value: &str) -> bool {
    value.parse::<u16>().is_ok_and(|port| port > 0)
}

/// `tcp://10.96.0.12:8180` (IPv6 hosts are bracketed); with `expected`,
/// the protocol and port must be those the name says.
fn is_url(value: &str, expected: Option<(&str, &str)>) -> bool {
    let Some((proto, address)) = value.split_once("://") else {
        return false;
    };
    let Ok(address) = address.parse::<std::net::SocketAddr>() else {
        return false;
    };
    match expected {
        Some((name_proto, port)) => {
            proto.eq_ignore_ascii_case(name_proto) && address.port().to_string() == port
        }
        None => matches!(proto, "tcp" | "udp" | "sctp"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_service_link;

    /// What a kubelet injected for Services `mandate` (ports 8180 `http`,
    /// 9180 `admin`) and `mandate-store` (443, unnamed).
    const INJECTED: &[(&str, &str)] = &[
        ("MANDATE_SERVICE_HOST", "10.96.12.7"),
        ("MANDATE_SERVICE_PORT", "8180"),
        ("MANDATE_SERVICE_PORT_HTTP", "8180"),
        ("MANDATE_SERVICE_PORT_ADMIN", "9180"),
        ("MANDATE_PORT", "tcp://10.96.12.7:8180"),
        ("MANDATE_PORT_8180_TCP", "tcp://10.96.12.7:8180"),
        ("MANDATE_PORT_8180_TCP_PROTO", "tcp"),
        ("MANDATE_PORT_8180_TCP_PORT", "8180"),
        ("MANDATE_PORT_8180_TCP_ADDR", "10.96.12.7"),
        ("MANDATE_PORT_9180_TCP", "tcp://10.96.12.7:9180"),
        ("MANDATE_PORT_9180_TCP_ADDR", "10.96.12.7"),
        ("MANDATE_STORE_SERVICE_HOST", "10.96.3.4"),
        ("MANDATE_STORE_SERVICE_PORT", "443"),
        ("MANDATE_STORE_PORT", "tcp://10.96.3.4:443"),
        ("MANDATE_STORE_PORT_443_TCP", "tcp://10.96.3.4:443"),
        ("MANDATE_STORE_PORT_443_TCP_PROTO", "tcp"),
        ("MANDATE_STORE_PORT_443_TCP_PORT", "443"),
        ("MANDATE_STORE_PORT_443_TCP_ADDR", "10.96.3.4"),
        ("MANDATE_DNS_PORT_53_UDP", "udp://10.96.0.10:53"),
        ("MANDATE_V6_SERVICE_HOST", "fd00::12"),
        ("MANDATE_V6_PORT", "tcp://[fd00::12]:8180"),
    ];

    #[test]
    fn every_variable_a_kubelet_injects_is_recognised() {
        for (name, value) in INJECTED {
            assert!(is_service_link(name, value), "{name}={value}");
        }
    }

    #[test]
    fn a_setting_or_a_typo_is_not_a_service_link() {
        for (name, value) in [
            // A setting's name, a typo, and link shapes with wrong values.
            ("MANDATE_SERVER_LISTEN", "0.0.0.0:8180"),
            ("MANDATE_SERVER_LISTN", "x"),
            ("MANDATE_SERVICE_HOST", "evil.example"),
            ("MANDATE_SERVICE_PORT", "http"),
            ("MANDATE_PORT", "8180"),
            ("MANDATE_PORT_8180_TCP", "tcp://10.96.12.7:9999"),
            ("MANDATE_PORT_8180_TCP_PORT", "9180"),
            ("MANDATE_PORT_8180_TCP_PROTO", "udp"),
            ("MANDATE_PORT_8180_HTTP", "tcp://10.96.12.7:8180"),
            ("MANDATE_PORT_8180_TCP_HOST", "10.96.12.7"),
            ("MANDATE_store_SERVICE_HOST", "10.96.3.4"),
            ("MANDATE__SERVICE_HOST", "10.96.3.4"),
            ("MANDATEX_SERVICE_HOST", "10.96.3.4"),
            ("OTHER_SERVICE_HOST", "10.96.3.4"),
        ] {
            assert!(!is_service_link(name, value), "{name}={value}");
        }
    }
}
