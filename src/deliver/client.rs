//! The outbound HTTP client: rustls (ring) with the webpki roots, no redirects, a timeout, and a
//! resolver that keeps only the addresses the delivery policy allows ([`TargetPolicy::judge`], the
//! same judgement as when a subscription is saved), so that a name cannot be pointed at the
//! inside (DNS rebinding included: the address checked is the address connected to).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::subscriptions::TargetPolicy;

pub(super) fn build(timeout: Duration, policy: &TargetPolicy) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .no_proxy()
        .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
        .build()
        .map_err(|error| error.to_string())
}

struct GuardedResolver {
    policy: TargetPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let mut kept = Vec::with_capacity(resolved.len());
            for address in resolved {
                match policy.judge(address.ip()) {
                    Ok(()) => kept.push(address),
                    Err(reason) => refused = refused.or(Some(reason)),
                }
            }
            if kept.is_empty() {
                let reason = refused.unwrap_or_else(|| "no address".to_owned());
                return Err(format!("{host} resolves to {reason}").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    async fn resolved(policy: TargetPolicy, name: &str) -> Result<Vec<SocketAddr>, String> {
        let resolver = GuardedResolver { policy };
        let name: reqwest::dns::Name = name.parse().unwrap();
        resolver.resolve(name).await.map(Iterator::collect).map_err(|error| error.to_string())
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_what_the_policy_that_saved_the_subscription_allows() {
        let refused = resolved(TargetPolicy::default(), "localhost").await.unwrap_err();
        assert!(refused.starts_with("localhost resolves to ") && refused.contains("loopback"), "{refused}");
        let loopback = TargetPolicy::new(false, ["127.0.0.1/32".parse().unwrap()]);
        let kept = resolved(loopback, "localhost").await.unwrap();
        assert!(!kept.is_empty() && kept.iter().all(|address| address.ip().to_string() == "127.0.0.1"), "{kept:?}");
    }
}
