//! How the configuration becomes queue handles: the `[redis]` section builds the connection
//! target, a `[queues.NAME]` section builds the queue's timing options.

use secrecy::ExposeSecret;

use super::{Error, Queue, QueueOptions, RedisConn, RedisTarget};
use crate::config::{QueueSettings, RedisSettings, Settings};
use crate::job::QueueName;

impl RedisSettings {
    /// The connection target these settings describe.
    #[must_use]
    pub fn target(&self) -> RedisTarget {
        RedisTarget {
            url: self.url.expose_secret().to_owned(),
            cluster_urls: self
                .cluster_urls
                .iter()
                .map(|u| u.expose_secret().to_owned())
                .collect(),
            response_timeout: self.response_timeout,
        }
    }
}

impl QueueSettings {
    /// The queue's timing options.
    #[must_use]
    pub fn queue_options(&self) -> QueueOptions {
        QueueOptions {
            lease: self.lease,
            retention: self.retention,
            dead_retention: self.dead_retention,
            maintenance_limit: (self.batch_size as usize).max(200),
            ..QueueOptions::default()
        }
    }
}

impl Settings {
    /// A handle on `queue` over `conn`, with the queue's configured options.
    #[must_use]
    pub fn queue_on(&self, conn: RedisConn, queue: &QueueName) -> Queue {
        let options = self.queue(queue).queue_options();
        Queue::new(conn, self.redis.key_prefix.as_str(), queue.clone(), options)
    }

    /// A handle on `queue` over a new connection.
    ///
    /// # Errors
    /// When the Redis URL does not parse.
    pub fn open_queue(&self, queue: &QueueName) -> Result<Queue, Error> {
        Ok(self.queue_on(RedisConn::open(&self.redis.target())?, queue))
    }
}
