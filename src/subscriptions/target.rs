//! Where deliveries may go (the SSRF policy): an absolute `https` URL (or `http` when
//! configuration allows it) whose host is a public address, or an address in a network the
//! configuration allows (`delivery_allow_networks`). Checked when a subscription is saved (after
//! DNS resolution) and before every request (the URL here, the names by the delivery client's
//! resolver), both through [`TargetPolicy::judge`], so that the two can never disagree.
//!
//! - Cloud metadata addresses ([`METADATA`]: 169.254.169.254, fd00:ec2::254, 100.100.100.200 and
//!   the like) are refused unless the allowlist names that very address (`/32` or `/128`): a
//!   network that contains one does not let it through.
//! - An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
//!   `::/96`, 6to4 `2002::/16`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, Teredo `2001::/32`
//!   with its obfuscated client address) is judged by the IPv4 address inside, which is where the
//!   packets end up; for the local-use NAT64 prefix, whose embedding depends on a prefix length
//!   only the network knows, by every place RFC 6052 could have put it.
//! - Every other address is public unless it is in a special-purpose range (private, loopback,
//!   link-local, shared, documentation, multicast, reserved and the like), and is allowed when it
//!   is public or in an allowed network.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Cloud metadata and host-agent addresses: refused unless allowed by exact address.
pub const METADATA: &[IpAddr] = &[
    // AWS, Azure, Google Cloud, Oracle, DigitalOcean, OpenStack and most others.
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    // AWS ECS task metadata and credentials, EKS Pod Identity.
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    // Alibaba Cloud.
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    // Azure's WireServer (a public address only reachable from inside Azure).
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    // Oracle Cloud's legacy metadata.
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    // AWS over IPv6 (IMDS, EKS Pod Identity), Google Cloud over IPv6.
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23)),
    IpAddr::V6(Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x254)),
];

/// Where deliveries may go.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// `http://` URLs are allowed (else HTTPS only).
    pub allow_http: bool,
    /// Networks allowed besides public addresses (`delivery_allow_networks`).
    pub allow_networks: Arc<[IpNet]>,
}

impl TargetPolicy {
    pub fn new(allow_http: bool, allow_networks: impl IntoIterator<Item = IpNet>) -> TargetPolicy {
        TargetPolicy { allow_http, allow_networks: allow_networks.into_iter().map(|net| net.trunc()).collect() }
    }

    /// Whether deliveries may go to `ip`; `Err` says why not, naming the rule (for "<host>
    /// resolves to <reason>").
    pub fn judge(&self, ip: IpAddr) -> Result<(), String> {
        let allowed = |ip: IpAddr| self.allow_networks.iter().any(|net| net.contains(&ip));
        let listed_exactly = |ip: IpAddr| {
            self.allow_networks.iter().any(|net| net.addr() == ip && net.prefix_len() == net.max_prefix_len())
        };
        let embedded = embedded_ipv4(ip);
        let metadata = std::iter::once(ip)
            .chain(embedded.iter().map(|(v4, _)| IpAddr::V4(*v4)))
            .find(|candidate| METADATA.contains(candidate));
        if let Some(metadata) = metadata {
            if listed_exactly(ip) || listed_exactly(metadata) {
                return Ok(());
            }
            return Err(format!(
                "{ip}{}, a cloud metadata address: never a delivery target unless delivery_allow_networks lists it exactly ({metadata}/{})",
                embedding(&embedded),
                if metadata.is_ipv4() { 32 } else { 128 }
            ));
        }
        if allowed(ip) {
            return Ok(());
        }
        if !embedded.is_empty() {
            // Judged by the IPv4 address inside (every candidate, for the local-use NAT64 prefix).
            for (v4, _) in &embedded {
                if !(allowed(IpAddr::V4(*v4)) || special_v4(*v4).is_none()) {
                    let range = special_v4(*v4).unwrap_or("special-purpose");
                    return Err(format!(
                        "{ip}{}, a {range} address not in delivery_allow_networks; deliveries never go there",
                        embedding(&embedded)
                    ));
                }
            }
            return Ok(());
        }
        let special = match ip {
            IpAddr::V4(v4) => special_v4(v4),
            IpAddr::V6(v6) => special_v6(v6),
        };
        match special {
            None => Ok(()),
            Some(range) => {
                Err(format!("{ip}, a {range} address not in delivery_allow_networks; deliveries never go there"))
            }
        }
    }
}

/// ", which carries the IPv4 address 127.0.0.1 (6to4)" for an address that carries one.
fn embedding(embedded: &[(Ipv4Addr, &'static str)]) -> String {
    match embedded {
        [] => String::new(),
        [(v4, form)] => format!(" (which carries the IPv4 address {v4}: {form})"),
        [(_, form), ..] => {
            let all: Vec<String> = embedded.iter().map(|(v4, _)| v4.to_string()).collect();
            format!(" (which may carry the IPv4 address {}: {form})", all.join(" or "))
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, with the form's name; empty for other addresses.
pub fn embedded_ipv4(ip: IpAddr) -> Vec<(Ipv4Addr, &'static str)> {
    let IpAddr::V6(v6) = ip else { return Vec::new() };
    let octets = v6.octets();
    let segments = v6.segments();
    let v4 = |bytes: [u8; 4]| Ipv4Addr::from(bytes);
    let last_four = v4([octets[12], octets[13], octets[14], octets[15]]);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return vec![(mapped, "IPv4-mapped")];
    }
    if segments[..6] == [0; 6] {
        // IPv4-compatible (deprecated); :: and ::1 are IPv6's own unspecified and loopback.
        return if u128::from(v6) > 1 { vec![(last_four, "IPv4-compatible")] } else { Vec::new() };
    }
    if segments[0] == 0x2002 {
        return vec![(v4([octets[2], octets[3], octets[4], octets[5]]), "6to4")];
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return vec![(last_four, "NAT64")];
    }
    if segments[..3] == [0x64, 0xff9b, 0x1] {
        // RFC 8215's local-use prefix: the IPv4 address is where RFC 6052 puts it for the
        // prefix length in use, /48 or longer.
        let mut candidates: Vec<(Ipv4Addr, &'static str)> = [48usize, 56, 64, 96]
            .into_iter()
            .map(|length| (rfc6052_ipv4(&octets, length), "NAT64 local-use"))
            .collect();
        candidates.dedup_by_key(|(v4, _)| *v4);
        return candidates;
    }
    if segments[0] == 0x2001 && segments[1] == 0 {
        // Teredo: the client's address is the last 32 bits, inverted.
        return vec![(v4([!octets[12], !octets[13], !octets[14], !octets[15]]), "Teredo")];
    }
    Vec::new()
}

/// The IPv4 address in an RFC 6052 IPv4-embedded IPv6 address with a prefix of `length` bits
/// (bits 64 to 71 are skipped).
fn rfc6052_ipv4(octets: &[u8; 16], length: usize) -> Ipv4Addr {
    let positions: Vec<usize> = (length / 8..16).filter(|&index| index != 8).take(4).collect();
    Ipv4Addr::new(octets[positions[0]], octets[positions[1]], octets[positions[2]], octets[positions[3]])
}

/// The special-purpose range an IPv4 address is in, or `None` for a public unicast address.
fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if ip.is_loopback() => "loopback",
        () if ip.is_private() => "private",
        () if ip.is_link_local() => "link-local",
        () if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        () if a == 0 => "this-network",
        () if ip.is_broadcast() => "broadcast",
        () if ip.is_multicast() => "multicast",
        () if ip.is_documentation() => "documentation",
        () if a == 192 && b == 0 && c == 0 => "IETF protocol assignment",
        () if a == 198 && (18..20).contains(&b) => "benchmarking",
        () if a >= 240 => "reserved",
        () => return None,
    })
}

/// The special-purpose range an IPv6 address (one that carries no IPv4 address) is in, or
/// `None` for a public unicast address.
fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    Some(match () {
        () if ip.is_loopback() => "loopback",
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_multicast() => "multicast",
        () if (segments[0] & 0xfe00) == 0xfc00 => "unique local",
        () if (segments[0] & 0xffc0) == 0xfe80 => "link-local",
        () if (segments[0] & 0xffc0) == 0xfec0 => "site-local",
        () if segments[0] == 0x2001 && segments[1] == 0x0db8 => "documentation",
        () if segments[..4] == [0x100, 0, 0, 0] => "discard-only",
        () if segments[0] == 0x2001 && segments[1] < 0x200 => "IETF protocol assignment",
        () if segments[0] == 0x3fff && segments[1] < 0x1000 => "documentation",
        () => return None,
    })
}

/// Whether `ip` is a public unicast address, judged as a delivery target with nothing allowed.
pub fn is_public(ip: IpAddr) -> bool {
    TargetPolicy::default().judge(ip).is_ok()
}

/// Checks that deliveries to `url` may be made: an absolute `https` URL (or `http` when
/// allowed), whose host resolves only to addresses the policy allows.
pub async fn check_target(url: &str, policy: &TargetPolicy) -> Result<(), String> {
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
    for ip in addresses {
        policy.judge(ip).map_err(|reason| format!("{host:?} resolves to {reason}"))?;
    }
    Ok(())
}

/// What can be checked without DNS: the scheme, no credentials, and a literal address in the
/// URL. Returns the host and port. The delivery client checks this before every request (its
/// resolver checks the names).
pub fn check_url(url: &str, policy: &TargetPolicy) -> Result<(String, u16), String> {
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
    if let Ok(ip) = host.parse::<IpAddr>() {
        policy.judge(ip).map_err(|reason| format!("must not point at {reason}"))?;
    }
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(networks: &[&str]) -> TargetPolicy {
        let parse =
            |text: &&str| text.parse::<IpNet>().unwrap_or_else(|_| IpNet::from(text.parse::<IpAddr>().unwrap()));
        TargetPolicy::new(true, networks.iter().map(parse))
    }

    fn judged(policy: &TargetPolicy, ip: &str) -> Result<(), String> {
        policy.judge(ip.parse().unwrap())
    }

    /// Every form, with nothing allowed: the address, and the words its refusal must contain
    /// (`None`: public, allowed).
    const WITH_NOTHING_ALLOWED: &[(&str, Option<&str>)] = &[
        ("93.184.216.34", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", Some("a loopback address")),
        ("10.1.2.3", Some("a private address")),
        ("172.16.0.1", Some("a private address")),
        ("192.168.1.1", Some("a private address")),
        ("169.254.1.1", Some("a link-local address")),
        ("100.64.0.1", Some("shared")),
        ("0.0.0.0", Some("this-network")),
        ("255.255.255.255", Some("broadcast")),
        ("224.0.0.1", Some("multicast")),
        ("192.0.2.1", Some("documentation")),
        ("198.18.0.1", Some("benchmarking")),
        ("240.0.0.1", Some("reserved")),
        ("::1", Some("a loopback address")),
        ("::", Some("unspecified")),
        ("fe80::1", Some("link-local")),
        ("fc00::1", Some("unique local")),
        ("fec0::1", Some("site-local")),
        ("ff02::1", Some("multicast")),
        ("2001:db8::1", Some("documentation")),
        ("100::1", Some("discard-only")),
        // Metadata, plain and in every IPv6 form.
        ("169.254.169.254", Some("cloud metadata address")),
        ("169.254.170.2", Some("cloud metadata address")),
        ("100.100.100.200", Some("cloud metadata address")),
        ("168.63.129.16", Some("cloud metadata address")),
        ("fd00:ec2::254", Some("cloud metadata address")),
        ("::ffff:169.254.169.254", Some("cloud metadata address")),
        ("::169.254.169.254", Some("cloud metadata address")),
        ("2002:a9fe:a9fe::", Some("cloud metadata address")),
        ("64:ff9b::a9fe:a9fe", Some("cloud metadata address")),
        // Loopback and private addresses carried in IPv6.
        ("::ffff:127.0.0.1", Some("IPv4-mapped")),
        ("::ffff:10.0.0.1", Some("a private address")),
        ("::127.0.0.1", Some("IPv4-compatible")),
        ("::10.0.0.1", Some("a private address")),
        ("2002:7f00:1::", Some("6to4")),
        ("2002:c0a8:101:1::1", Some("a private address")),
        ("64:ff9b::7f00:1", Some("NAT64")),
        ("64:ff9b::10.0.0.1", Some("a private address")),
        ("64:ff9b:1::7f00:1", Some("NAT64 local-use")),
        ("64:ff9b:1:7f00:1::", Some("a loopback address")),
        // Teredo: server 65.54.227.120, client 127.0.0.1 inverted (80ff:fffe).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("Teredo")),
        // Public addresses carried in IPv6 are public.
        ("::ffff:93.184.216.34", None),
        ("2002:5db8:d822::1", None),
        ("64:ff9b::1.1.1.1", None),
        ("2001:0:4136:e378:8000:63bf:a247:27dd", None),
    ];

    #[test]
    fn every_address_form_is_judged_with_nothing_allowed() {
        let strict = TargetPolicy::default();
        for (address, refusal) in WITH_NOTHING_ALLOWED {
            match (judged(&strict, address), refusal) {
                (Ok(()), None) => {}
                (Err(reason), Some(words)) => assert!(reason.contains(words), "{address}: {reason:?} lacks {words:?}"),
                (outcome, expected) => panic!("{address}: {outcome:?}, expected a refusal with {expected:?}"),
            }
        }
    }

    #[test]
    fn an_allowed_network_lets_its_addresses_through_in_every_form_but_not_metadata() {
        let allowed = policy(&["10.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16", "fc00::/7", "100.64.0.0/10"]);
        for address in [
            "10.9.8.7",
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
            "169.254.1.1",
            "fd12::1",
        ] {
            assert_eq!(judged(&allowed, address), Ok(()), "{address}");
        }
        for address in ["127.0.0.2", "192.168.1.1", "::1", "2002:7f00:2::"] {
            assert!(judged(&allowed, address).is_err(), "{address} is outside the allowed networks");
        }
        for metadata in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "2002:a9fe:a9fe::",
        ] {
            let reason = judged(&allowed, metadata).unwrap_err();
            assert!(reason.contains("unless delivery_allow_networks lists it exactly"), "{metadata}: {reason}");
        }
    }

    #[test]
    fn a_metadata_address_listed_exactly_is_allowed() {
        let listed = policy(&["169.254.169.254/32", "fd00:ec2::254"]);
        assert_eq!(judged(&listed, "169.254.169.254"), Ok(()));
        assert_eq!(judged(&listed, "::ffff:169.254.169.254"), Ok(()), "judged by the IPv4 address inside");
        assert_eq!(judged(&listed, "fd00:ec2::254"), Ok(()));
        assert!(judged(&listed, "169.254.170.2").is_err());
    }

    #[test]
    fn the_deprecated_private_networks_stand_for_everything_private_except_metadata() {
        let private = policy(crate::config::PRIVATE_NETWORKS);
        for address in
            ["127.0.0.1", "10.0.0.1", "172.20.0.1", "192.168.0.1", "169.254.1.1", "::1", "fd12::1", "fe80::1"]
        {
            assert_eq!(judged(&private, address), Ok(()), "{address}");
        }
        for metadata in METADATA {
            assert!(private.judge(*metadata).is_err(), "{metadata}");
        }
    }

    #[test]
    fn the_local_use_nat64_prefix_is_judged_by_every_place_the_ipv4_address_could_be() {
        // 127.0.0.1 at /48 (octets 6, 7, 9, 10): refused even though the /96 reading is public.
        let reason = judged(&TargetPolicy::default(), "64:ff9b:1:7f00:0:100:101:101").unwrap_err();
        assert!(reason.contains("127.0.0.1"), "{reason}");
    }

    #[tokio::test]
    async fn targets_are_https_and_allowed_addresses_unless_configured() {
        let strict = TargetPolicy::default();
        assert!(check_target("https://93.184.216.34/hook", &strict).await.is_ok());
        let http = check_target("http://93.184.216.34/hook", &strict).await.unwrap_err();
        assert!(http.contains("https"), "{http}");
        let metadata = check_target("https://169.254.169.254/latest/meta-data", &strict).await.unwrap_err();
        assert!(metadata.contains("metadata address"), "{metadata}");
        let six_to_four = check_target("https://[2002:7f00:1::]/", &strict).await.unwrap_err();
        assert!(six_to_four.contains("127.0.0.1") && six_to_four.contains("6to4"), "{six_to_four}");
        let compatible = check_target("https://[::127.0.0.1]/", &strict).await.unwrap_err();
        assert!(compatible.contains("IPv4-compatible"), "{compatible}");
        let mapped = check_target("https://[::ffff:10.0.0.1]/", &strict).await.unwrap_err();
        assert!(mapped.contains("private"), "{mapped}");
        let localhost = check_target("https://localhost:8443/", &strict).await.unwrap_err();
        assert!(localhost.contains("resolves to") && localhost.contains("loopback"), "after resolution: {localhost}");
        assert!(check_target("https://user:pass@93.184.216.34/", &strict).await.unwrap_err().contains("credentials"));
        assert!(check_target("ftp://93.184.216.34/", &strict).await.is_err());
        let loopback = policy(&["127.0.0.1/32"]);
        assert!(check_target("http://127.0.0.1:9/hook", &loopback).await.is_ok());
        let private = policy(crate::config::PRIVATE_NETWORKS);
        let refused = check_target("http://169.254.169.254/latest/meta-data", &private).await.unwrap_err();
        assert!(refused.contains("cloud metadata address"), "{refused}");
    }
}
