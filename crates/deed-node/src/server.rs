//! Starting and stopping a node with its HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::NodeError;
use crate::node::{Genesis, Node, NodeKeys, Started, Storage};
use axum::serve::ListenerExt;

/// A node serving HTTP.
#[derive(Debug)]
pub struct Running {
    /// The node.
    pub node: Arc<Node>,
    /// The address the API listens on (useful with port 0).
    pub addr: SocketAddr,
    started: Started,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
}

/// Opens the node's stores, binds `cfg.http`, and starts the API, the consensus
/// engine and the roles. The API accepts connections when this returns.
pub async fn start(
    cfg: Config,
    keys: NodeKeys,
    storage: Storage,
    genesis: Genesis,
) -> Result<Running, NodeError> {
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|source| NodeError::Io {
            op: "bind the HTTP address",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NodeError::Io {
        op: "read the HTTP address",
        source,
    })?;
    let mut cfg = cfg;
    // With port 0 the bonded endpoint must name the port actually bound.
    cfg.http = addr;
    let mut started = Node::open(cfg, keys, storage, genesis)?;
    let node = started.node.clone();
    let tasks = started.spawn().await?;
    let app = crate::http::router(node.clone());
    let mut stop = started.shutdown_signal();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        };
        // Without TCP_NODELAY a response's body written after its headers waits for
        // the client's delayed acknowledgement (40 ms on Linux) whenever the headers
        // went out alone.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(Running {
        node,
        addr,
        started,
        tasks,
        server,
    })
}

impl Running {
    /// Waits until the chain reaches `height`, or fails after `limit`.
    pub async fn wait_height(&self, height: u64, limit: Duration) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.node.with_state(|c| c.head().height) >= height {
                return Ok(());
            }
            if self.started.consensus_failed() {
                return Err(NodeError::Config("the consensus engine stopped".into()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Config(format!(
                    "no block {height} after {limit:?}: is a quorum of validators running?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the API, the consensus engine and the roles, and waits (a few seconds
    /// at most) until the node is released, so its data directory can be reopened.
    pub async fn stop(mut self) {
        self.started.stop().await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            // Connections that stay open past the grace period are cut.
            server.abort();
            let _ = server.await;
        }
        let node = self.node;
        drop(self.started);
        for _ in 0..100 {
            if Arc::strong_count(&node) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("node still referenced after stop");
    }
}
