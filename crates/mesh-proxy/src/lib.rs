//! mesh-proxy
