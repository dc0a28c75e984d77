//! Coordination between replicas.

mod redis;

pub use self::redis::RedisCoordinator;
