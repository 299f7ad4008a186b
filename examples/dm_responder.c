/*
 * dm_responder: a minimal DM application written against the XDSM DMAPI
 * only (#include <dmapi.h>, link with -ldmapi), as a GPFS or XFS DMAPI
 * program would be.
 *
 * It creates a session, takes the DM_EVENT_USER disposition of the file
 * system holding MOUNTPOINT, prints the session id, then answers COUNT
 * events: user messages sent with dm_send_msg from any node of the
 * cluster.  A synchronous message whose text is "abort" is answered with
 * DM_RESP_ABORT / EAGAIN, every other one with DM_RESP_CONTINUE.  Then it
 * gives the disposition back, destroys its session and exits 0.
 *
 *   usage: dm_responder MOUNTPOINT COUNT
 */
#include <dmapi.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what)
{
	fprintf(stderr, "dm_responder: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	char *version;
	dm_sessid_t sid;
	void *fsh;
	size_t fshlen;
	dm_eventset_t events;
	int count, handled = 0;
	static char buf[65536] __attribute__((aligned(8)));

	if (argc != 3) {
		fprintf(stderr, "usage: %s MOUNTPOINT COUNT\n", argv[0]);
		return 2;
	}
	count = atoi(argv[2]);
	if (dm_init_service(&version) != 0)
		return die("dm_init_service");
	if (dm_create_session(DM_NO_SESSION, "pdm example: dm_responder", &sid) != 0)
		return die("dm_create_session");
	if (dm_path_to_fshandle(argv[1], &fsh, &fshlen) != 0)
		return die("dm_path_to_fshandle");
	DMEV_ZERO(events);
	DMEV_SET(DM_EVENT_USER, events);
	if (dm_set_disp(sid, fsh, fshlen, DM_NO_TOKEN, &events, DM_EVENT_MAX) != 0)
		return die("dm_set_disp");
	printf("session %llu ready (%s)\n", (unsigned long long)sid, version);
	fflush(stdout);

	while (handled < count) {
		size_t rlen;
		dm_eventmsg_t *msg;

		if (dm_get_events(sid, 0, DM_EV_WAIT, sizeof(buf), buf, &rlen) != 0)
			return die("dm_get_events");
		for (msg = (dm_eventmsg_t *)buf; msg != NULL;
		     msg = DM_STEP_TO_NEXT(msg, dm_eventmsg_t *)) {
			const char *text = DM_GET_VALUE(msg, ev_data, const char *);
			int len = (int)DM_GET_LEN(msg, ev_data);
			int abort_it = len == 5 && memcmp(text, "abort", 5) == 0;

			printf("event %d from node %u token %llu: %.*s\n", (int)msg->ev_type,
			       (unsigned)msg->ev_nodeid, (unsigned long long)msg->ev_token, len, text);
			fflush(stdout);
			if (msg->ev_token != DM_INVALID_TOKEN &&
			    dm_respond_event(sid, msg->ev_token,
					     abort_it ? DM_RESP_ABORT : DM_RESP_CONTINUE,
					     abort_it ? EAGAIN : 0, 0, NULL) != 0)
				return die("dm_respond_event");
			handled++;
		}
	}

	DMEV_ZERO(events);
	if (dm_set_disp(sid, fsh, fshlen, DM_NO_TOKEN, &events, DM_EVENT_MAX) != 0)
		return die("dm_set_disp (clear)");
	dm_handle_free(fsh, fshlen);
	if (dm_destroy_session(sid) != 0)
		return die("dm_destroy_session");
	printf("done: %d events, session destroyed\n", handled);
	return 0;
}
