//! Authentication: htpasswd basic auth and Vast.ai's token scheme.
