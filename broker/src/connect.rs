//! How the broker reaches Redis: the password from the environment joined
//! to the URL, and which errors are an unreachable server (retried while
//! connecting) rather than a refusal by one that answered.

/// Whether an error is a connection that could not be made or was dropped
/// (worth retrying), rather than a refusal by a server that answered.
pub(crate) fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let redis = cause.downcast_ref::<redis::RedisError>().or_else(|| {
            match cause.downcast_ref::<deadpool_redis::PoolError>() {
                Some(deadpool_redis::PoolError::Backend(e)) => Some(e),
                _ => None,
            }
        });
        redis.is_some_and(|e| {
            e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped()
        }) || cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// `url` with `password` as its password, unless it names one already. The
/// user name, if any, stays; the password is percent-encoded, so any
/// character may be in it.
pub(crate) fn with_password(url: &str, password: Option<&str>) -> String {
    let Some(password) = password else {
        return url.to_owned();
    };
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_none() => {
            match parsed.set_password(Some(password)) {
                Ok(()) => parsed.to_string(),
                Err(()) => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::with_password;

    #[test]
    fn the_password_from_the_environment_joins_the_url_once() {
        assert_eq!(
            with_password("redis://subliminal@h:1/", Some("p@ss/w:rd")),
            "redis://subliminal:p%40ss%2Fw%3Ard@h:1/"
        );
        assert_eq!(with_password("redis://h:1/", Some("x")), "redis://:x@h:1/");
        assert_eq!(
            with_password("rediss://:given@h:1/0", Some("x")),
            "rediss://:given@h:1/0"
        );
        assert_eq!(with_password("redis://h:1/", None), "redis://h:1/");
    }
}
