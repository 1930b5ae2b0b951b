//! Fair service under abuse: each client address gets a share of the connections and a rate of
//! requests, so that one address (or one IPv6 /64) cannot take the gateway from everyone else,
//! and hooks and sources can be given a rate of their own.
//!
//! - [`ConnectionTable`] counts open connections per client and in all. A connection past the
//!   client's share or past the gateway's cap is refused at once by the listener (HTTP `429` or
//!   `503`, SMTP `421`) instead of waiting in the kernel's queue, where it would hold up
//!   well-behaved clients behind it. Its map holds only clients with a connection open, so it is
//!   never larger than the cap.
//! - [`RateTable`] is a token bucket per key, for request rates per client address. It holds at
//!   most [`CLIENTS_TRACKED`] buckets: a full bucket says nothing and is dropped to make room (at
//!   most one sweep a second); when every tracked client is busy, new ones share one overflow
//!   bucket, so a flood of addresses costs bounded memory and limits itself.
//! - [`HookRates`]: one bucket per hook (by event name) and per platform source (by its path
//!   segment) that configuration names; a fixed set, built once.
//!
//! A token bucket is a few lines over a `Mutex<HashMap>`; `governor`'s keyed limiter grows with
//! every key it sees until `retain_recent` is called and has no bound of its own, which is the
//! property a table keyed by attacker-chosen addresses needs most.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Request buckets kept for client addresses at most (about 40 bytes each).
pub const CLIENTS_TRACKED: usize = 65_536;

/// How often a full rate table may be swept for idle buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Whom a limit counts: an IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 one), or
/// the /64 of an IPv6 address, the least one subscriber is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The client already has its share of connections open.
    ClientAtLimit,
    /// The gateway has as many connections open as it serves.
    GatewayFull,
}

impl ConnectionRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::ClientAtLimit => "client_limit",
            ConnectionRefusal::GatewayFull => "gateway_full",
        }
    }
}

/// Open connections per client and in all, with their caps.
#[derive(Debug)]
pub struct ConnectionTable {
    per_client: usize,
    total: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    table: Arc<ConnectionTable>,
    client: ClientKey,
}

impl ConnectionTable {
    /// At most `total` connections, and `per_client` from one client.
    pub fn new(total: usize, per_client: usize) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable { per_client: per_client.min(total), total, open: Mutex::default() })
    }

    /// Counts a new connection from `ip`, or says why it may not be served.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, ConnectionRefusal> {
        let client = ClientKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.total {
            return Err(ConnectionRefusal::GatewayFull);
        }
        if open.by_client.get(&client).is_some_and(|count| *count >= self.per_client) {
            return Err(ConnectionRefusal::ClientAtLimit);
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Ok(ConnectionSlot { table: self.clone(), client })
    }

    /// Connections open now: in all, and the number of clients holding them.
    pub fn counts(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (open.total, open.by_client.len())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total -= 1;
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst of one second's worth (at least one request).
    pub fn per_second(per_second: f64) -> Rate {
        Rate { per_second, burst: per_second.max(1.0) }
    }

    /// `per_minute` with a burst of one minute's worth.
    pub fn per_minute(per_minute: f64) -> Rate {
        Rate { per_second: per_minute / 60.0, burst: per_minute.max(1.0) }
    }
}

/// A token bucket: `tokens` as of `updated`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket { tokens: rate.burst, updated: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second))
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut refilled = *self;
        refilled.refill(rate, now);
        refilled.tokens >= rate.burst
    }
}

/// Whole seconds to tell a client to wait (`Retry-After`), at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// A token bucket per key, bounded in the keys it holds (see the module's header).
#[derive(Debug)]
pub struct RateTable<K> {
    rate: Rate,
    capacity: usize,
    buckets: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    by_key: HashMap<K, Bucket>,
    /// Shared by the keys that found the table full of busy ones.
    overflow: Bucket,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq> RateTable<K> {
    pub fn new(rate: Rate, capacity: usize) -> RateTable<K> {
        let now = Instant::now();
        RateTable {
            rate,
            capacity,
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                overflow: Bucket::full(rate, now),
                last_sweep: None,
            }),
        }
    }

    /// Counts one request for `key`; `Err` is how long until it may ask again.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let buckets = &mut *buckets;
        if let Some(bucket) = buckets.by_key.get_mut(&key) {
            return bucket.take(rate, now);
        }
        if buckets.by_key.len() >= self.capacity
            && buckets.last_sweep.is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY)
        {
            buckets.last_sweep = Some(now);
            buckets.by_key.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        if buckets.by_key.len() >= self.capacity {
            return buckets.overflow.take(rate, now);
        }
        buckets.by_key.entry(key).or_insert(Bucket::full(rate, now)).take(rate, now)
    }

    /// Keys holding a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).by_key.len()
    }
}

/// What an HTTP listener holds per client: its connections and its request rate.
#[derive(Debug)]
pub struct ClientLimits {
    pub connections: Arc<ConnectionTable>,
    /// `None`: requests are not limited per client.
    pub requests: Option<RateTable<ClientKey>>,
}

impl ClientLimits {
    pub fn new(max_connections: usize, per_client: usize, requests: Option<Rate>) -> ClientLimits {
        ClientLimits {
            connections: ConnectionTable::new(max_connections, per_client),
            requests: requests.map(|rate| RateTable::new(rate, CLIENTS_TRACKED)),
        }
    }

    /// Counts a request from `ip`; `Err` is how long until it may ask again.
    pub fn take_request(&self, ip: IpAddr) -> Result<(), Duration> {
        match &self.requests {
            Some(table) => table.take(ClientKey::of(ip), Instant::now()),
            None => Ok(()),
        }
    }
}

/// Which limit a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// The client address's request rate.
    Client,
    /// The hook's rate (`hook_rate_limits`).
    Hook,
    /// The platform source's rate (`source_rate_limits`).
    Source,
}

/// A rate of one hook or source, with its bucket.
#[derive(Debug)]
struct Limited {
    rate: Rate,
    bucket: Mutex<Bucket>,
}

/// The rates configuration gives hooks (by event name) and platform sources (by path segment).
#[derive(Debug, Default)]
pub struct HookRates {
    hooks: HashMap<String, Limited>,
    sources: HashMap<String, Limited>,
}

impl HookRates {
    /// Requests per second for each named hook and source.
    pub fn new(hooks: &BTreeMap<String, f64>, sources: &BTreeMap<String, f64>) -> HookRates {
        let now = Instant::now();
        let limited = |(name, per_second): (&String, &f64)| {
            let rate = Rate::per_second(*per_second);
            (name.clone(), Limited { rate, bucket: Mutex::new(Bucket::full(rate, now)) })
        };
        HookRates { hooks: hooks.iter().map(limited).collect(), sources: sources.iter().map(limited).collect() }
    }

    /// Counts a request to the hook `event_name` (and to its source, when it has one); `Err` says
    /// which limit was met and how long until it may be asked again.
    pub fn take(&self, event_name: &str, source: Option<&str>) -> Result<(), (RateScope, Duration)> {
        let now = Instant::now();
        let take = |limited: &Limited| {
            limited.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(limited.rate, now)
        };
        if let Some(limited) = self.hooks.get(event_name) {
            take(limited).map_err(|wait| (RateScope::Hook, wait))?;
        }
        if let Some(limited) = source.and_then(|source| self.sources.get(source)) {
            take(limited).map_err(|wait| (RateScope::Source, wait))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(ClientKey::of(ip("::ffff:192.0.2.7")), ClientKey::of(ip("192.0.2.7")));
        assert_eq!(ClientKey::of(ip("2001:db8:1:2::1")), ClientKey::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(ClientKey::of(ip("2001:db8:1:2::1")), ClientKey::of(ip("2001:db8:1:3::1")));
        assert_ne!(ClientKey::of(ip("127.0.0.1")), ClientKey::of(ip("127.0.0.2")));
    }

    #[test]
    fn a_client_past_its_share_is_refused_while_others_are_served_up_to_the_cap() {
        let table = ConnectionTable::new(3, 2);
        let first = table.open(ip("127.0.0.1")).unwrap();
        let _second = table.open(ip("127.0.0.1")).unwrap();
        assert_eq!(table.open(ip("127.0.0.1")).unwrap_err(), ConnectionRefusal::ClientAtLimit);
        let _other = table.open(ip("127.0.0.2")).unwrap();
        assert_eq!(table.open(ip("127.0.0.3")).unwrap_err(), ConnectionRefusal::GatewayFull);
        drop(first);
        assert_eq!(table.counts(), (2, 2));
        let _again = table.open(ip("127.0.0.3")).unwrap();
    }

    #[test]
    fn the_connection_table_forgets_a_client_whose_last_connection_closed() {
        let table = ConnectionTable::new(10, 10);
        let slots: Vec<_> = (1..=5).map(|n| table.open(ip(&format!("10.0.0.{n}"))).unwrap()).collect();
        assert_eq!(table.counts(), (5, 5));
        drop(slots);
        assert_eq!(table.counts(), (0, 0));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_the_next_request_may_come() {
        let table = RateTable::new(Rate { per_second: 2.0, burst: 3.0 }, 10);
        let start = Instant::now();
        for _ in 0..3 {
            table.take("a", start).unwrap();
        }
        let wait = table.take("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        table.take("b", start).expect("another key has its own bucket");
        table.take("a", start + Duration::from_millis(500)).expect("refilled at the rate");
    }

    #[test]
    fn the_rate_table_never_holds_more_keys_than_its_capacity() {
        let table = RateTable::new(Rate { per_second: 1.0, burst: 2.0 }, 100);
        let start = Instant::now();
        for n in 0..10_000u32 {
            let _ = table.take(n, start);
        }
        assert_eq!(table.tracked(), 100);
        // The keys past the capacity share one bucket: two requests, then they wait.
        assert!(table.take(20_000, start).is_err());
        // Idle buckets refill and make room again.
        let later = start + Duration::from_secs(5);
        table.take(30_000, later).unwrap();
        assert_eq!(table.tracked(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn a_hook_and_its_source_each_have_the_rate_configuration_gives_them() {
        let hooks = BTreeMap::from([("shop.order".to_owned(), 1.0)]);
        let sources = BTreeMap::from([("stripe".to_owned(), 2.0)]);
        let rates = HookRates::new(&hooks, &sources);
        rates.take("shop.order", None).unwrap();
        assert_eq!(rates.take("shop.order", None).unwrap_err().0, RateScope::Hook);
        rates.take("stripe.event", Some("stripe")).unwrap();
        rates.take("stripe.event", Some("stripe")).unwrap();
        assert_eq!(rates.take("stripe.event", Some("stripe")).unwrap_err().0, RateScope::Source);
        for _ in 0..100 {
            rates.take("unlimited", Some("github")).unwrap();
        }
    }
}
