// Package e2e proves caw's user journey in a real Docker Engine: `caw setup`
// on a throwaway host home, `docker run $(caw docker-flags) IMAGE` with
// caw-init as the entrypoint, credentials refreshed on either side, signals,
// a terminal, orphans, two containers on one login, bad set-ups, and the
// Dockerfile.example a user writes. The tests drive the real docker CLI; the
// images they need are made here by package e2e/images (nothing is pulled).
//
// The tests need root and Docker; without them they fail saying so (set
// CAW_TEST_ALLOW_SKIP=1 to skip instead).
package e2e
