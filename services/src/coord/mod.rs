//! Coordination between replicas.

mod redis;

pub use self::redis::{Notice, RedisCoordinator, Settling};
