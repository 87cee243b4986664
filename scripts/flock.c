/* flock: the file-descriptor form of util-linux flock(1), static, for the
 * FROM-scratch test image bus-test-codex:local (busybox has no flock), where
 * the fake Codex CLI (scripts/fake-codex.sh) locks its state database and
 * its login with it.
 *
 * usage: flock [-n] [-u] FD
 *   lock FD exclusively (flock(2), LOCK_EX), waiting for it; -n: fail with
 *   exit 1 at once when another process holds it; -u: unlock FD.
 * Exit 0 when done, 1 when -n found the lock held, 2 on a usage or system
 * error (with a message on stderr).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

int main(int argc, char **argv) {
    int op = LOCK_EX, i = 1;
    for (; i < argc - 1; i++) {
        if (strcmp(argv[i], "-n") == 0) {
            op |= LOCK_NB;
        } else if (strcmp(argv[i], "-u") == 0) {
            op = LOCK_UN;
        } else {
            break;
        }
    }
    char *end = NULL;
    long fd = i == argc - 1 ? strtol(argv[i], &end, 10) : -1;
    if (fd < 0 || end == NULL || *end != '\0') {
        fputs("usage: flock [-n] [-u] FD\n", stderr);
        return 2;
    }
    while (flock((int)fd, op) != 0) {
        if (errno == EINTR) {
            continue;
        }
        if (errno == EWOULDBLOCK) {
            return 1;
        }
        fprintf(stderr, "flock %ld: %s\n", fd, strerror(errno));
        return 2;
    }
    return 0;
}
