//! Trigger intake over HTTP and from AWS events.
