//! What torchrun tells each process: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`, and whether its agent hosts the store
//! (`TORCHELASTIC_USE_AGENT_STORE`, with `TORCHELASTIC_RESTART_COUNT`).

use std::time::Duration;

use super::DistError;

/// Default timeout of the rendezvous and of every collective: a rank that
/// died or never connects stops the others within it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this node (picks the GPU).
    pub local_rank: usize,
    /// Host of the TCPStore.
    pub master_addr: String,
    /// Port of the TCPStore.
    pub master_port: u16,
    /// torchrun's agent hosts the store (every rank is a client).
    pub agent_store: bool,
    /// The agent's restart count (prefixes the agent store's keys).
    pub restart_count: u32,
}

impl DistEnv {
    /// Reads the process environment; `Ok(None)` when `WORLD_SIZE` is unset
    /// (a plain run).
    pub fn from_env() -> Result<Option<DistEnv>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`DistEnv::from_env`], from any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>, DistError> {
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let num = |name: &'static str, value: Option<String>| -> Result<usize, DistError> {
            let value = value.unwrap_or_default();
            value.trim().parse::<usize>().map_err(|_| DistError::Env {
                var: name,
                value: value.clone(),
                problem: if value.is_empty() { "unset".into() } else { "not a non-negative integer".into() },
            })
        };
        let world_size = num("WORLD_SIZE", Some(world))?;
        let rank = num("RANK", var("RANK"))?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", Some(v))?,
            None => rank,
        };
        if world_size == 0 || rank >= world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: rank.to_string(),
                problem: format!("must be below WORLD_SIZE={world_size} (> 0)"),
            });
        }
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_default();
        let master_port = port.trim().parse::<u16>().map_err(|_| DistError::Env {
            var: "MASTER_PORT",
            value: port.clone(),
            problem: "not a port number (1-65535)".into(),
        })?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let restart_count = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => num("TORCHELASTIC_RESTART_COUNT", Some(v))? as u32,
            None => 0,
        };
        Ok(Some(DistEnv { rank, world_size, local_rank, master_addr, master_port, agent_store, restart_count }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| list.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn torchrun_variables_are_read_and_checked() {
        assert_eq!(DistEnv::from_vars(vars(&[])).unwrap(), None);
        let e = DistEnv::from_vars(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank, e.master_port), (3, 4, 1, 29500));
        assert!(e.agent_store && e.restart_count == 2 && e.master_addr == "node0");
        let err = DistEnv::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")])).unwrap_err();
        assert!(err.to_string().contains("below WORLD_SIZE=2"), "{err}");
        let err = DistEnv::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "0")])).unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
        let err = DistEnv::from_vars(vars(&[("WORLD_SIZE", "two"), ("RANK", "0")])).unwrap_err();
        assert!(err.to_string().contains("WORLD_SIZE=\"two\""), "{err}");
    }
}
