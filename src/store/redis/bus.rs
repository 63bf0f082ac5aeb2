//! The chat bus: `PUBLISH`/`SUBSCRIBE` on one server or Sentinel's master, sharded
//! pub/sub (`SPUBLISH`/`SSUBSCRIBE`) on Cluster.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::{PushKind, Value};

use super::conn::{Topology, TIMEOUT};
use super::RedisStore;
use crate::error::StoreError;
use crate::store::{Bus, BusEvent, StoreResult};

impl RedisStore {
    /// `SPUBLISH` on Cluster (only the channel's shard carries it), `PUBLISH` elsewhere.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// One message on a channel.
    pub(super) async fn send(&self, channel: String, event: &BusEvent) -> StoreResult<()> {
        let body = serde_json::to_string(event).expect("chat events serialize");
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(channel).arg(body);
        self.run(|mut c| async move { cmd.query_async::<i64>(&mut c).await.map(|_| ()) }).await
    }
}

fn decode_event(payload: &[u8]) -> Option<BusEvent> {
    serde_json::from_slice::<BusEvent>(payload)
        .inspect_err(|e| tracing::warn!(error = %e, "ignoring malformed chat bus message"))
        .ok()
}

#[async_trait]
impl Bus for RedisStore {
    async fn publish(&self, event: &BusEvent) -> StoreResult<()> {
        self.send(self.chat_channel(), event).await
    }

    async fn publish_to(&self, node_id: &str, event: &BusEvent) -> StoreResult<()> {
        self.send(self.node_channel(node_id), event).await
    }

    async fn subscribe(&self, node_id: &str) -> StoreResult<BoxStream<'static, BusEvent>> {
        let channels = [self.chat_channel(), self.node_channel(node_id)];
        let client = match &self.topology {
            Topology::Single { client, .. } => client.clone(),
            Topology::Sentinel(sentinel) => Topology::master(sentinel).await?,
            Topology::Cluster { nodes, certs } => {
                // Sharded pub/sub: each channel is subscribed on its own shard (one
                // SSUBSCRIBE per channel: they hash to different slots); messages
                // arrive as RESP3 pushes. The stream ends when a shard drops the
                // subscription (failover, slot moved) or a connection is lost.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = Topology::cluster_builder(nodes, certs).push_sender(tx).build()?;
                let mut conn = match tokio::time::timeout(TIMEOUT * 2, client.get_async_connection()).await {
                    Ok(conn) => conn?,
                    Err(_) => return Err(StoreError::RedisUnreachable),
                };
                for channel in &channels {
                    conn.ssubscribe(channel).await?;
                }
                tracing::info!(?channels, "subscribed to the chat bus (sharded)");
                let events = futures_util::stream::unfold((conn, rx), |(conn, mut rx)| async move {
                    loop {
                        let push = rx.recv().await?;
                        match push.kind {
                            PushKind::SMessage => {
                                let event = match push.data.get(1) {
                                    Some(Value::BulkString(payload)) => decode_event(payload),
                                    _ => None,
                                };
                                if let Some(event) = event {
                                    return Some((event, (conn, rx)));
                                }
                            }
                            PushKind::SUnsubscribe | PushKind::Disconnection => return None,
                            _ => {}
                        }
                    }
                });
                return Ok(events.boxed());
            }
        };
        // A shared connection cannot subscribe: the bus has a dedicated one.
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channels).await?;
        tracing::info!(?channels, "subscribed to the chat bus");
        let events = pubsub.into_on_message().filter_map(|msg| async move { decode_event(msg.get_payload_bytes()) });
        Ok(events.boxed())
    }
}
