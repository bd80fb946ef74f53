"""HLS cut by the proxy from a channel's single MPEG-TS upstream (see docs/hls.md)."""
