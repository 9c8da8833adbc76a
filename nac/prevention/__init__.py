"""Prevention information (draft section 7): OSV advisory feeds, signed feeds, version matching.

- `cache`: the feed tables in the store (feed_sources, advisories, affected, feed_state.epoch).
- `sync.sync(db, name)` / `sync.import_path(db, path)`: fetch, verify, import; SyncReport
  names the changed advisories and (ecosystem, package) pairs for targeted re-evaluation.
- `index.load_index(db)` -> VulnIndex: `findings(posture)`, `findings_compiled(...)`,
  `affected_sources(ids)`; `index.refresh()` reloads when the epoch moves.
- `packages.compile_posture(posture)`: package identities as ids, computed once at intake.
- `signing`: Ed25519 key pairs and detached FILE.sig signatures for feed publishers.
"""
