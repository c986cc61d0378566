//! The session pool's lifecycle: idle, errors, crashes, readiness, admission, concurrency.

