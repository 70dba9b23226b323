// Release (--version) lives in its own module so that mount_unionfs, which uses nothing of
// HAMMER2, reports the same; the tools see it through this module as before.
@_exported import HAMMER2Release
