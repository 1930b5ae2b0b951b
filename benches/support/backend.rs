//! The stores a benchmark measures hookgate on, and which of them a run can measure.

/// The key a bench's nodes seal subscription secrets with (PostgreSQL requires one, and every
/// node of one database needs the same).
pub const SECRETS_KEY: &str = "6265e3c1d2f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4";

/// Where hookgate keeps its events, and on how many nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One node on a fresh SQLite file.
    Sqlite,
    /// `nodes` nodes on one fresh schema of the PostgreSQL server named by
    /// `HOOKGATE_BENCH_POSTGRES_URL`, the load spread over them.
    Postgres { nodes: usize },
}

impl Backend {
    /// What a run measures unless told otherwise: SQLite, PostgreSQL with one node and with two.
    pub const DEFAULT: &[Backend] = &[Backend::Sqlite, Backend::Postgres { nodes: 1 }, Backend::Postgres { nodes: 2 }];

    /// `sqlite`, `postgres` (one node) or `postgres-N` (N nodes).
    pub fn parse(name: &str) -> anyhow::Result<Backend> {
        match name {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres { nodes: 1 }),
            _ => match name.strip_prefix("postgres-").and_then(|nodes| nodes.parse().ok()) {
                Some(nodes) if nodes >= 1 => Ok(Backend::Postgres { nodes }),
                _ => anyhow::bail!("unknown backend {name:?}; expected sqlite, postgres or postgres-N (N nodes)"),
            },
        }
    }

    /// A comma-separated list of backends.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Backend>> {
        let backends = list.split(',').map(|name| Backend::parse(name.trim())).collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!backends.is_empty(), "the list of backends is empty");
        Ok(backends)
    }

    pub fn name(self) -> String {
        match self {
            Backend::Sqlite => "sqlite".to_owned(),
            Backend::Postgres { nodes: 1 } => "postgres".to_owned(),
            Backend::Postgres { nodes } => format!("postgres-{nodes}"),
        }
    }

    pub fn nodes(self) -> usize {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres { nodes } => nodes,
        }
    }
}

/// The backends a run can measure: the PostgreSQL ones need the server's URL. Without it they
/// are left out, each with a line saying why (returned second), unless they were `asked` for by
/// name, which makes the missing URL an error.
pub fn available(
    backends: &[Backend],
    asked: bool,
    postgres_server: Option<&str>,
) -> anyhow::Result<(Vec<Backend>, Vec<String>)> {
    let mut available = Vec::new();
    let mut skipped = Vec::new();
    for &backend in backends {
        match (backend, postgres_server) {
            (Backend::Postgres { .. }, None) if asked => {
                anyhow::bail!("{} was asked for, but {} is not set", backend.name(), super::postgres::URL_VARIABLE)
            }
            (Backend::Postgres { .. }, None) => {
                skipped.push(format!("{}: skipped, {} is not set", backend.name(), super::postgres::URL_VARIABLE))
            }
            _ => available.push(backend),
        }
    }
    Ok((available, skipped))
}
