"""Programs that kvmlab copies into lab nodes (standard library only: guests have python3)."""
