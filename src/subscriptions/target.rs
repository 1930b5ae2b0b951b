//! Where deliveries may go: an absolute `https` URL (or `http` when configuration allows it)
//! whose host is a public address, unless private ones are allowed. Checked when a subscription
//! is saved (after DNS resolution) and before every request (the URL here, the names by the
//! delivery client's resolver), so that no subscription reaches private, loopback, link-local
//! or metadata addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where deliveries may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetPolicy {
    /// `http://` URLs are allowed (else HTTPS only).
    pub allow_http: bool,
    /// Private, loopback, link-local and metadata addresses are allowed (tests, closed networks).
    pub allow_private: bool,
}

/// Checks that deliveries to `url` may be made: an absolute `https` URL (or `http` when
/// allowed), whose host resolves only to public addresses unless private ones are allowed.
pub async fn check_target(url: &str, policy: TargetPolicy) -> Result<(), String> {
    let (host, port) = check_url(url, policy)?;
    if host.parse::<IpAddr>().is_ok() {
        return Ok(()); // A literal address was checked with the URL.
    }
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|error| format!("the host {host:?} does not resolve: {error}"))?
        .map(|address| address.ip())
        .collect();
    if addresses.is_empty() {
        return Err(format!("the host {host:?} does not resolve"));
    }
    if !policy.allow_private
        && let Some(ip) = addresses.iter().find(|ip| !is_public(**ip))
    {
        return Err(format!(
            "{host:?} resolves to {ip}, a private, loopback, link-local or metadata address; deliveries never go there"
        ));
    }
    Ok(())
}

/// What can be checked without DNS: the scheme, no credentials, and a literal address in the
/// URL. Returns the host and port. The delivery client checks this before every request (its
/// resolver checks the names).
pub fn check_url(url: &str, policy: TargetPolicy) -> Result<(String, u16), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if policy.allow_http => {}
        Some("http") => return Err("must be an https URL (http is not allowed by this gateway's configuration)".into()),
        _ => return Err("must be an absolute https URL".into()),
    }
    let host = uri.host().ok_or("has no host")?.trim_start_matches('[').trim_end_matches(']');
    if uri.authority().is_some_and(|authority| authority.as_str().contains('@')) {
        return Err("must not carry credentials".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !policy.allow_private
        && !is_public(ip)
    {
        return Err(format!(
            "{host:?} resolves to {ip}, a private, loopback, link-local or metadata address; deliveries never go there"
        ));
    }
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Ok((host.to_owned(), port))
}

/// Whether `ip` is a public unicast address (not private, loopback, link-local, metadata,
/// shared, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, including fd00:ec2::254 (metadata)
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 maps to IPv4 behind it
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: TargetPolicy = TargetPolicy { allow_http: true, allow_private: true };
    const STRICT: TargetPolicy = TargetPolicy { allow_http: false, allow_private: false };

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn targets_are_https_and_public_unless_configured() {
        assert!(check_target("https://93.184.216.34/hook", STRICT).await.is_ok());
        let http = check_target("http://93.184.216.34/hook", STRICT).await.unwrap_err();
        assert!(http.contains("https"), "{http}");
        let metadata = check_target("https://169.254.169.254/latest/meta-data", STRICT).await.unwrap_err();
        assert!(metadata.contains("metadata address"), "{metadata}");
        let mapped = check_target("https://[::ffff:10.0.0.1]/", STRICT).await.unwrap_err();
        assert!(mapped.contains("private"), "{mapped}");
        let localhost = check_target("https://localhost:8443/", STRICT).await.unwrap_err();
        assert!(localhost.contains("loopback"), "checked after resolution: {localhost}");
        assert!(check_target("https://user:pass@93.184.216.34/", STRICT).await.unwrap_err().contains("credentials"));
        assert!(check_target("ftp://93.184.216.34/", STRICT).await.is_err());
        assert!(check_target("http://127.0.0.1:9/hook", OPEN).await.is_ok());
    }
}
