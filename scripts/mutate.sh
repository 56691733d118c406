#!/usr/bin/env bash
# mutate.sh: a mutation run over the sync decision (sync/policy), the write
# paths of its two callers (the guard and the Keychain bridge) and the agents
# table.
# Each mutant is a single-point change a reviewer would call meaningful; it
# is applied to the file, the package tests run, and the file is restored.
# A mutant is killed when the tests fail. Needs root (the guard's namespace
# tests). Usage: scripts/mutate.sh [NAME-REGEXP]
#
# Mutants: one per line, "file ||| name ||| old ||| new", where old occurs
# exactly once in file; \n and \t in old and new are a newline and a tab.
set -u
cd "$(dirname "$0")/.."
only=${1:-.}
mutants=$(cat <<'LIST'
sync/policy/policy.go ||| most recent change wins, reversed ||| case h.Changed:\n\t\t\tcmp = 1 ||| case h.Changed:\n\t\t\tcmp = -1
sync/policy/policy.go ||| fresher side wins, reversed ||| if cmp > 0 {\n\t\treturn Host, true ||| if cmp < 0 {\n\t\treturn Host, true
sync/policy/policy.go ||| flush's last-chance update dropped ||| case in.Cause == OnFlush:\n\t\t// dst holds ||| case in.Cause == OnFlush && false:\n\t\t// dst holds
sync/policy/policy.go ||| torn side written at once ||| if in.Cause != OnFlush {\n\t\t\ta.say(2, "", "the %s side is %s; waiting ||| if false {\n\t\t\ta.say(2, "", "the %s side is %s; waiting
sync/policy/policy.go ||| logout overwritten when both changed ||| if cur.Changed {\n\t\ta.Unowe, a.Dst = true, dst ||| if cur.Changed && !srcChanged {\n\t\ta.Unowe, a.Dst = true, dst
sync/policy/policy.go ||| host login never wins ||| in.Now.Sub(in.HostWrittenAt) >= RaceWindow ||| in.Now.Sub(in.HostWrittenAt) < 0
sync/policy/policy.go ||| raced refresh taken for a login ||| in.Now.Sub(in.HostWrittenAt) >= RaceWindow ||| in.Now.Sub(in.HostWrittenAt) >= 0
sync/policy/policy.go ||| implausible expiry accepted ||| if why := h.Claims.Implausible; why != "" ||| if why := h.Claims.Implausible; why == "-"
sync/policy/policy.go ||| another account accepted ||| if !agents.SameAccount(h.Claims, H.Claims) ||| if false
sync/policy/policy.go ||| stale content pushed ||| if h.Stale { ||| if false {
sync/policy/policy.go ||| start-up pushes a fresher home ||| if H.St.State.Usable() {\n\t\t\treturn deliver(a, in, Home, false) ||| if H.St.State.Usable() {\n\t\t\treturn deliver(a, in, Host, false)
sync/policy/policy.go ||| write-back budget never spent ||| if n > MaxWriteBacks { ||| if n > MaxWriteBacks+100 {
sync/policy/policy.go ||| raced write-back not counted ||| if stop := budget(&a, in, dst); stop {\n\t\t\treturn a\n\t\t}\n\t\ta.say(2, "", "the %s side took ||| a.say(2, "", "the %s side took
sync/policy/policy.go ||| rate limit off ||| if at := hostDueAt(in); at.After(in.Now) ||| if at := hostDueAt(in); false && at.After(in.Now)
sync/policy/policy.go ||| flush rate-limited ||| if dst == Host && in.Cause != OnFlush { ||| if dst == Host {
sync/policy/policy.go ||| stub never repaired ||| if cur.Changed && in.RepairStubs && ||| if false && in.RepairStubs &&
sync/policy/policy.go ||| deleted file repaired (logout undone) ||| cur.St.State == agents.LoggedOut && ||| cur.St.State != agents.Valid &&
sync/policy/policy.go ||| stub repaired over the side's own token ||| (cur.PrevMine && cur.PrevSum == src.Sum) ||| (cur.PrevSum == src.Sum)
sync/guard/cred.go ||| swap ranking (beats) reversed ||| return ta > tb ||| return ta < tb
sync/guard/cred.go ||| torn file ranked as a stub ||| case st.State == agents.Empty || st.State == agents.Invalid:\n\t\treturn tierTorn, st ||| case st.State == agents.Empty || st.State == agents.Invalid:\n\t\treturn tierStub, st
sync/guard/cred.go ||| write-time re-check always true ||| return policy.Sum(now) == cur.Sum ||| return true
sync/policy/memory.go ||| nothing ever stale ||| m.staleBefore = m.histN ||| _ = m.histN
sync/policy/memory.go ||| write-backs not recorded ||| m.countWriteBack(a.Dst, now) ||| _ = now
sync/policy/memory.go ||| rate limit never advances ||| m.HostDue = nextHostDue(m.Limits, m.HostDue, now) ||| _ = now
sync/policy/memory.go ||| merges dropped ||| data := agents.Merge(m.Format, src.Data, cur.Data) ||| data := src.Data
sync/guard/cred.go ||| dead host inode not reported ||| c.hostAt.dead = true\n\t\tc.reportDead()\n\tcase errors.Is(err, errReadOnly) ||| c.hostAt.dead = true\n\tcase errors.Is(err, errReadOnly)
sync/guard/cred.go ||| held-back write never delivered ||| c.sync(anySide, policy.OnLimit) ||| _ = policy.OnLimit
host/bridge/bridge.go ||| bridge: a start deferred by a locked keychain pushes the mirror ||| c, p.started = policy.OnStart, true ||| p.started = true
host/bridge/bridge.go ||| bridge: no flush at stop ||| p.sync(nil, policy.OnFlush) ||| p.sync(nil, policy.OnEvent)
host/bridge/bridge.go ||| bridge: held-back write never delivered ||| p.arm(&p.limit, a.At.Sub(now), policy.OnLimit) ||| _ = a.At
host/bridge/bridge.go ||| bridge: no Keychain re-read before its write ||| if now.Sum != cur.Sum {\n\t\t\treturn true ||| if now.Sum != cur.Sum && false {\n\t\t\treturn true
host/bridge/bridge.go ||| bridge: every look restarts the settle wait ||| if in.Side[a.Dst].Changed || p.settle == nil { ||| if true {
agents/formats.go ||| codex: one token is a logout ||| if access == "" && refresh == "" {\n\t\treturn Status{State: LoggedOut}\n\t}\n\tlastT ||| if access == "" || refresh == "" {\n\t\treturn Status{State: LoggedOut}\n\t}\n\tlastT
agents/merge.go ||| merge: a duplicate key's first value wins ||| out[i].raw = raw ||| _ = i
sync/policy/memory.go ||| a remembered status not brought to now ||| return m.examine(data, sum, now).Status.At(now) ||| return m.examine(data, sum, now).Status
sync/policy/memory.go ||| implausible claims remembered ||| if f.Claims.Implausible != "" || now.Before(f.at) { ||| if false {
sync/policy/memory.go ||| merge skipped when it keeps something ||| if !agents.MergeNeeded(m.Format, ||| if true || !agents.MergeNeeded(m.Format,
agents/facts.go ||| claude: MCP logins never merged ||| if !w.keys[k] || k == "mcpOAuth" { ||| if !w.keys[k] {
agents/facts.go ||| opencode: a fresher loser entry not merged ||| if !w.keys[k] || l.expires[k] > w.expires[k] { ||| if !w.keys[k] {
agents/claims.go ||| a login naming no account matches any ||| ok && want != "" && got != want ||| ok && want != "" && got != "" && got != want
sync/guard/guard.go ||| a stuck credential never handed over ||| takeover := time.AfterFunc(stallAfter, g.read) ||| takeover := time.AfterFunc(1000*stallAfter, g.read)
sync/guard/host.go ||| host path not checked against the held inode ||| if b.authfd >= 0 && (unix.Fstat(b.pfd, &pst) != nil ||| if false && (unix.Fstat(b.pfd, &pst) != nil
internal/safefs/user.go ||| a thread's groups taken for the user's ||| if !slices.Contains(have, uint32(g)) { ||| if !slices.Contains(have, uint32(g)) && false {
agents/claims.go ||| lifetime margin ignored ||| return now.Add(lifetime + claimMargin) ||| return now.Add(100 * lifetime + claimMargin)
LIST
)
killed=0 total=0
while IFS= read -r line; do
	[ -z "$line" ] && continue
	file=${line%% ||| *}; rest=${line#* ||| }
	name=${rest%% ||| *}; rest=${rest#* ||| }
	old=${rest%% ||| *}; new=${rest#* ||| }
	[[ $name =~ $only ]] || continue
	total=$((total + 1))
	cp "$file" "$file.orig"
	if ! OLD=$old NEW=$new perl -0777 -i -pe '
		BEGIN { ($o, $n) = map { s/\\n/\n/g; s/\\t/\t/g; $_ } ($ENV{OLD}, $ENV{NEW}); }
		$c = () = /\Q$o\E/g; die "matches $c times\n" if $c != 1; s/\Q$o\E/$n/;' "$file"; then
		echo "BAD   $name ($file): the mutant does not apply"
		mv "$file.orig" "$file"
		continue
	fi
	pkg=./$(dirname "$file")
	if go test -count=1 -failfast "$pkg" >/tmp/mutate.$$.log 2>&1; then
		echo "ALIVE $name ($file)"
	else
		if grep -q "build failed\|\[setup failed\]" /tmp/mutate.$$.log; then
			echo "BAD   $name ($file): does not build"
		else
			echo "KILLED $name"
			killed=$((killed + 1))
		fi
	fi
	mv "$file.orig" "$file"
done <<<"$mutants"
rm -f /tmp/mutate.$$.log
echo "score: $killed of $total killed"
[ "$killed" = "$total" ]
