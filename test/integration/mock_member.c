/*
 * mock_member: libcairn's scripted stand-in member (test/unit/test_client_mock.h)
 * as a program, so the integration tests can check cairnwire's protobuf
 * messages against protobuf-c and exercise cairn-load before cairnd exists.
 * Serves argv[1] (port 0 allowed), prints the bound URL, serves until stdin
 * closes.  Built by the test: cc -I. -Ibuild mock_member.c build/libproto.a
 * -lnng -lprotobuf-c -lpthread.
 */
#include <stdio.h>

#include "test/unit/test_client_mock.h"

int main(int argc, char **argv)
{
    struct mock m;
    int rv;

    if (argc != 2) {
        fprintf(stderr, "usage: mock_member URL\n");
        return 2;
    }
    if ((rv = mock_start(&m, argv[1], NULL, 42)) != 0) {
        fprintf(stderr, "mock_member: %s: %s\n", argv[1], nng_strerror(rv));
        return 1;
    }
    printf("%s\n", m.url);
    fflush(stdout);
    while (getchar() != EOF)
        ;
    mock_stop(&m);
    return 0;
}
