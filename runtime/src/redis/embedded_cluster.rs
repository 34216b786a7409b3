//! A local Redis Cluster of `redis-server` children on free loopback ports: masters and
//! replicas made into one cluster by `redis-cli --cluster create`, for tests and benchmarks
//! that need a real cluster to reshard, fail over and kill.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::embedded::{
    find_binary, EmbeddedError, EmbeddedOptions, EmbeddedRedis, EmbeddedSecurity,
};

/// How long a node may be unreachable before the others count it as failing; short, so a
/// killed master's replica is elected within seconds.
const NODE_TIMEOUT_MS: u32 = 1500;

/// How long one `redis-cli` run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster; every node is killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct EmbeddedCluster {
    nodes: Vec<EmbeddedRedis>,
    cli: PathBuf,
    /// The nodes' password, which `redis-cli` is given too.
    password: Option<String>,
}

/// `redis-cli` beside the `redis-server` binary, `KEYWAY_REDIS_CLI`, or on `PATH`.
fn find_cli() -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = std::env::var_os("KEYWAY_REDIS_CLI") {
        return Ok(PathBuf::from(path));
    }
    let beside = find_binary()?.with_file_name("redis-cli");
    if beside.is_file() {
        return Ok(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            EmbeddedError(
                "redis-cli was not found beside redis-server or on PATH (it comes with redis-server; \
                 Debian/Ubuntu: `apt-get install redis-tools`), or point KEYWAY_REDIS_CLI at it"
                    .into(),
            )
        })
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// Its client port on loopback.
    pub port: u16,
    /// Whether it is a master (else a replica).
    pub master: bool,
    /// Whether the cluster counts it as failed (`fail` or `fail?`).
    pub failing: bool,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    /// How many slots it serves (masters).
    pub slots: usize,
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 8 {
                return None;
            }
            let address = parts[1].split('@').next()?;
            let port = address.rsplit(':').next()?.parse().ok()?;
            let flags = parts[2];
            let slots = parts[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .map(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                    }
                    None => 1,
                })
                .sum();
            Some(ClusterNode {
                id: parts[0].to_owned(),
                port,
                master: flags.contains("master"),
                failing: flags.contains("fail"),
                master_id: Some(parts[3]).filter(|m| *m != "-").map(str::to_owned),
                slots,
            })
        })
        .collect()
}

impl EmbeddedCluster {
    /// Start `masters` masters with `replicas` replicas each, make them one cluster with every
    /// slot assigned, and wait until every node says the cluster is up and every replica is in
    /// sync with its master.
    pub fn start(
        masters: usize,
        replicas: usize,
        options: EmbeddedOptions,
    ) -> Result<Self, EmbeddedError> {
        EmbeddedCluster::start_secured(masters, replicas, options, EmbeddedSecurity::default())
    }

    /// As [`EmbeddedCluster::start`], every node with a password (which replicas also use
    /// towards their masters) and/or a TLS port, over which the nodes also talk to each other
    /// (`tls-cluster`, `tls-replication`). Clients on a TLS port are told the nodes' TLS
    /// ports, clients on a plaintext port their plaintext ones; the helpers here use the
    /// plaintext ports. Nodes present their server certificate to each other as clients too,
    /// so it must allow client authentication as well as server authentication.
    pub fn start_secured(
        masters: usize,
        replicas: usize,
        options: EmbeddedOptions,
        security: EmbeddedSecurity,
    ) -> Result<Self, EmbeddedError> {
        if masters < 3 {
            return Err(EmbeddedError(format!(
                "a cluster needs at least 3 masters, not {masters}"
            )));
        }
        // A port found free can be taken by another process before the node binds it, or
        // between the node's start and the cluster's creation: start afresh a few times.
        let mut last = None;
        for _ in 0..3 {
            match EmbeddedCluster::start_once(masters, replicas, options.clone(), &security) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EmbeddedError("the cluster did not start".into())))
    }

    fn start_once(
        masters: usize,
        replicas: usize,
        options: EmbeddedOptions,
        security: &EmbeddedSecurity,
    ) -> Result<Self, EmbeddedError> {
        let cli = find_cli()?;
        let mut node_options = options;
        node_options.cluster_node = true;
        node_options.extra_args.extend([
            "--cluster-node-timeout".to_owned(),
            NODE_TIMEOUT_MS.to_string(),
            // A replica may always be elected, however long its link was down.
            "--cluster-replica-validity-factor".to_owned(),
            "0".to_owned(),
        ]);
        if let Some(password) = &security.password {
            node_options
                .extra_args
                .extend(["--masterauth".to_owned(), password.clone()]);
        }
        if security.tls.is_some() {
            node_options
                .extra_args
                .extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
        }
        let nodes = (0..masters * (1 + replicas))
            .map(|_| EmbeddedRedis::start_secured(node_options.clone(), security.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = EmbeddedCluster {
            nodes,
            cli,
            password: security.password.clone(),
        };
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        create.extend([
            "--cluster-replicas".to_owned(),
            replicas.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        cluster.cli_args(&create)?;
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// A cluster of 3 masters with a replica each and no append-only file, shared by every
    /// caller in this process while any of them holds it (tests that do not kill nodes share
    /// one, each under a key prefix of its own); it stops when the last holder drops it.
    pub fn shared() -> Result<Arc<EmbeddedCluster>, EmbeddedError> {
        static SHARED: Mutex<Weak<EmbeddedCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let options = EmbeddedOptions {
            append_only: false,
            ..Default::default()
        };
        let cluster = Arc::new(EmbeddedCluster::start(3, 1, options)?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<other>&…`, naming every node, the
    /// form `redis.url` takes for a cluster.
    pub fn url(&self) -> String {
        let mut ports = self.nodes.iter().map(EmbeddedRedis::port);
        let first = ports.next().unwrap_or_default();
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// `rediss-cluster://127.0.0.1:<first TLS port>?node=…`, when started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter_map(EmbeddedRedis::tls_port)
            .collect();
        let (first, rest) = ports.split_first()?;
        let rest: Vec<String> = rest.iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
        Some(format!(
            "rediss-cluster://127.0.0.1:{first}?{}",
            rest.join("&")
        ))
    }

    /// Every node, in start order.
    pub fn nodes(&self) -> &[EmbeddedRedis] {
        &self.nodes
    }

    fn node_mut(&mut self, port: u16) -> Result<&mut EmbeddedRedis, EmbeddedError> {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .ok_or_else(|| EmbeddedError(format!("no node of this cluster on port {port}")))
    }

    /// Run `redis-cli` with `args` and return what it printed; an error says what it printed
    /// when it failed.
    pub fn cli_args(&self, args: &[String]) -> Result<String, EmbeddedError> {
        let mut command = Command::new(&self.cli);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EmbeddedError(format!("cannot run {}: {e}", self.cli.display())))?;
        // `--cluster create` waits for the nodes to join for as long as it takes: bound it.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(output) => output
                .map_err(|e| EmbeddedError(format!("cannot run {}: {e}", self.cli.display())))?,
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                return Err(EmbeddedError(format!(
                    "redis-cli {} did not finish within {CLI_TIMEOUT:?}",
                    args.join(" ")
                )));
            }
        };
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(EmbeddedError(format!(
                "redis-cli {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                text.trim_end(),
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        Ok(text)
    }

    /// Run one command on the node at `port` (`redis-cli -p <port> <args>`).
    pub fn command(&self, port: u16, args: &[&str]) -> Result<String, EmbeddedError> {
        let mut all = vec!["-p".to_owned(), port.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        self.cli_args(&all)
    }

    /// The cluster's nodes as a running node sees them.
    pub fn topology(&self) -> Result<Vec<ClusterNode>, EmbeddedError> {
        let mut last = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match self.command(node.port(), &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EmbeddedError("no node of the cluster is running".into())))
    }

    /// The ports of the masters that serve slots, as the cluster sees them now.
    pub fn masters(&self) -> Result<Vec<u16>, EmbeddedError> {
        Ok(self
            .topology()?
            .into_iter()
            .filter(|n| n.master && !n.failing && n.slots > 0)
            .map(|n| n.port)
            .collect())
    }

    /// Whether every running node says `cluster_state:ok`, sees every slot served by a master
    /// that is not failing, and every running replica's link to its master is up.
    fn healthy(&self) -> Result<bool, EmbeddedError> {
        let mut served = 0;
        for node in self.topology()? {
            if node.master && !node.failing {
                served += node.slots;
            }
        }
        if served != 16384 {
            return Ok(false);
        }
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let info = self.command(node.port(), &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Ok(false);
            }
            let replication = self.command(node.port(), &["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Wait until the cluster is healthy (see `healthy`).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.healthy();
            if let Ok(true) = state {
                return Ok(());
            }
            if Instant::now() > deadline {
                let why = match state {
                    Err(e) => e.to_string(),
                    Ok(_) => "not every slot is served, or a node is not ok".to_owned(),
                };
                return Err(EmbeddedError(format!(
                    "the cluster was not healthy within {timeout:?}: {why}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) -> Result<(), EmbeddedError> {
        self.node_mut(port)?.kill();
        Ok(())
    }

    /// Start the node on `port` again (same port, directory and node id); it rejoins.
    pub fn restart(&mut self, port: u16) -> Result<(), EmbeddedError> {
        self.node_mut(port)?.restart()
    }

    /// Kill the master on `port` and wait until one of its replicas has been elected and the
    /// cluster is healthy again. Returns the new master's port. The new master has no replica
    /// of its own until the old one is restarted (it rejoins as the new master's replica).
    pub fn kill_master(&mut self, port: u16, timeout: Duration) -> Result<u16, EmbeddedError> {
        let topology = self.topology()?;
        let id = topology
            .iter()
            .find(|n| n.port == port && n.master)
            .map(|n| n.id.clone())
            .ok_or_else(|| EmbeddedError(format!("the node on port {port} is not a master")))?;
        let replicas: Vec<u16> = topology
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
            .collect();
        self.kill(port)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(nodes) = self.topology() {
                let promoted = nodes
                    .iter()
                    .find(|n| replicas.contains(&n.port) && n.master && n.slots > 0);
                if let Some(new) = promoted {
                    let new = new.port;
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.wait_healthy(left.max(Duration::from_secs(1)))?;
                    return Ok(new);
                }
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError(format!(
                    "no replica of the master on port {port} was elected within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `redis-cli --cluster check` passes: every node agrees on the slot map and no
    /// slot is open (migrating or importing). A reshard refuses to start before.
    pub fn wait_agreed(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + timeout;
        let any = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .map(EmbeddedRedis::port)
            .ok_or_else(|| EmbeddedError("no node of the cluster is running".into()))?;
        let check = [
            "--cluster".to_owned(),
            "check".to_owned(),
            format!("127.0.0.1:{any}"),
        ];
        loop {
            match self.cli_args(&check) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Move `slots` slots from the master on `from` to the master on `to` with
    /// `redis-cli --cluster reshard`, entry by entry (`MIGRATE`), while clients keep working.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> Result<(), EmbeddedError> {
        self.wait_agreed(Duration::from_secs(20))?;
        let topology = self.topology()?;
        let id = |port: u16| {
            topology
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .ok_or_else(|| EmbeddedError(format!("no node on port {port}")))
        };
        let args = [
            "--cluster".to_owned(),
            "reshard".to_owned(),
            format!("127.0.0.1:{from}"),
            "--cluster-from".to_owned(),
            id(from)?,
            "--cluster-to".to_owned(),
            id(to)?,
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
            "--cluster-pipeline".to_owned(),
            "10".to_owned(),
        ];
        self.cli_args(&args)?;
        self.wait_agreed(Duration::from_secs(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000 [5461->-abc]
67ed 127.0.0.1:30002@31002 master,fail - 1426238316232 1426238314212 2 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].master_id.as_deref(), Some("e7d1"));
        assert!(!nodes[0].master);
        assert_eq!((nodes[1].port, nodes[1].slots), (30001, 5462));
        assert!(nodes[2].failing && nodes[2].slots == 0);
    }
}
