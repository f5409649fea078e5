"""Live broadcast media (docs/broadcast.md): WHIP ingest, the input manager (programme), the
transcoder ladder and WHEP edges. Every tier moves encoded frames; only the transcoder decodes."""
