package guard

import (
	"time"

	"github.com/caw-dev/caw/sync/policy"
)

// CredReport is what the guard did with one synced credential since Start:
// the facts a caller (or a test) checks, instead of reading log lines.
type CredReport struct {
	Agent  string
	Target string // the home copy, relative to the home
	// NotSynced is why the credential is not kept in sync at all ("" when it
	// is); the log line says what to do about it.
	NotSynced string
	// HomeWrites and HostWrites count the guard's completed writes to each
	// side.
	HomeWrites, HostWrites int
	// HomeWriteBacks and HostWriteBacks count writes of the fresher token
	// back to a side that went back to an older one; HomeLeftAlone and
	// HostLeftAlone are set once a side did so too often and is left alone.
	HomeWriteBacks, HostWriteBacks int
	HomeLeftAlone, HostLeftAlone   bool
	// HomeHostile and HostHostile count reads of a side whose file was
	// refused (a symlink, a hard link, a FIFO, a huge file...) and ignored.
	HomeHostile, HostHostile int
	// Implausible and OtherAccount count decisions that kept the home's
	// content from the host: implausible claims (a forged or broken
	// credential), or another account than the host's.
	Implausible, OtherAccount int
	// DeadHost: the host replaced its file by rename, so the mount no longer
	// reaches it. ReadOnlyHost: the host file refuses the guard's writes.
	DeadHost, ReadOnlyHost bool
	// Polled is the interval the host side is stat-polled at (0: it is not).
	Polled time.Duration
}

// Why a synced credential is not synced (CredReport.NotSynced).
const (
	NotSyncedLockedMount = "locked mount"       // caw-init without root cannot pass caw's locked mounts
	NotSyncedNotMounted  = "not mounted"        // the host file is not mounted (no $(caw docker-flags))
	NotSyncedHostDir     = "host directory"     // bind-dir: the host directory cannot be used
	NotSyncedHostMissing = "host file missing"  // Docker mounted a directory: no host file at docker run
	NotSyncedHome        = "home"               // the home copy's directory cannot be made
	NotSyncedUnwatchable = "host not watchable" // inotify cannot watch the host file
)

// Report returns what the guard did with each synced credential: those it
// syncs, in manifest order, then those it could not.
func (g *Guard) Report() []CredReport {
	out := make([]CredReport, 0, len(g.creds)+len(g.skipped))
	for _, c := range g.creds {
		c.mu.Lock()
		r := c.rep
		r.HomeLeftAlone, r.HostLeftAlone = c.mem.Side[home].LeftAlone, c.mem.Side[host].LeftAlone
		r.DeadHost, r.ReadOnlyHost = c.hostAt.dead, c.hostAt.readOnly
		c.mu.Unlock()
		r.Agent, r.Target = c.e.Agent, c.e.ContainerTarget
		if g.poll != nil {
			for _, it := range g.poll.items {
				if it.t.c == c {
					r.Polled = g.poll.every
				}
			}
		}
		out = append(out, r)
	}
	return append(out, g.skipped...)
}

func (r *CredReport) wrote(s side) {
	if s == home {
		r.HomeWrites++
	} else {
		r.HostWrites++
	}
}

func (r *CredReport) wroteBack(s side) {
	if s == home {
		r.HomeWriteBacks++
	} else {
		r.HostWriteBacks++
	}
}

func (r *CredReport) hostile(s side) {
	if s == home {
		r.HomeHostile++
	} else {
		r.HostHostile++
	}
}

func (r *CredReport) refused(why string) {
	switch why {
	case policy.RefusedImplausible:
		r.Implausible++
	case policy.RefusedAccount:
		r.OtherAccount++
	}
}
