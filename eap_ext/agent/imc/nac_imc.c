/*
 * nac_imc.c - TCG IF-IMC 1.2 plug-in for wpa_supplicant / eapol_test (loaded via
 * /etc/tnc_config). It is a relay, not an agent: the posture work happens in the
 * `nac-agent imc` child process, reached over a socketpair with a small framing.
 *
 * Why a C shim and not an embedded Python interpreter (cffi embedding):
 *  - wpa_supplicant is a long-lived root daemon; embedding CPython would load an
 *    interpreter, its GIL and every imported module into that process for the life of
 *    the IMC, and a Python exception or a crashing extension would take the supplicant
 *    (and the host's network access) down with it. A child process is crash-isolated:
 *    if it dies or hangs, this shim times out, kills it and returns an error code.
 *  - the same shim works with any Python the agent is installed for; nothing in here
 *    depends on the interpreter's ABI.
 *
 * Framing (both directions): type u32 | length u32 | payload, big-endian.
 *  - type < 0xFFFFFF00: a TNC message; type is the IF-IMC message type
 *    ((vendor << 8) | subtype), payload the PA-TNC message.
 *  - 0xFFFFFF01 BEGIN (payload: connection id u32), shim -> agent
 *  - 0xFFFFFF02 BATCH_ENDING (payload: connection id u32), shim -> agent
 *  - 0xFFFFFF03 STATE (payload: connection id u32, new state u32), shim -> agent
 *  - 0xFFFFFF00 END (no payload), agent -> shim: no more messages for this event.
 * Vendor ID 0xFFFFFF is TNC_VENDORID_ANY, never the type of a real message, so the
 * control frames cannot collide with messages. Every event the shim sends is answered
 * by zero or more message frames then END; the shim hands those messages to the TNCC
 * with TNC_TNCC_SendMessage while still inside the IF-IMC call, as IF-IMC requires.
 *
 * The child command is $NAC_IMC_COMMAND, else the one compiled in (NAC_IMC_COMMAND),
 * run with /bin/sh -c. $NAC_IMC_TIMEOUT_MS bounds each exchange (default 60000).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef NAC_IMC_COMMAND
#define NAC_IMC_COMMAND "nac-agent imc"
#endif

#define EXPORT __attribute__((visibility("default")))

/* IF-IMC 1.2 types: TNC_UInt32 is unsigned long in the TCG headers and in hostap. */
typedef unsigned long TNC_UInt32;
typedef unsigned char *TNC_BufferReference;
typedef TNC_UInt32 TNC_IMCID;
typedef TNC_UInt32 TNC_ConnectionID;
typedef TNC_UInt32 TNC_ConnectionState;
typedef TNC_UInt32 TNC_MessageType;
typedef TNC_MessageType *TNC_MessageTypeList;
typedef TNC_UInt32 TNC_Version;
typedef TNC_UInt32 TNC_Result;

typedef TNC_Result (*TNC_TNCC_BindFunctionPointer)(TNC_IMCID imcID, char *functionName,
						    void **pOutFunctionPointer);
typedef TNC_Result (*TNC_TNCC_SendMessagePointer)(TNC_IMCID imcID,
						   TNC_ConnectionID connectionID,
						   TNC_BufferReference message,
						   TNC_UInt32 messageLength,
						   TNC_MessageType messageType);
typedef TNC_Result (*TNC_TNCC_ReportMessageTypesPointer)(TNC_IMCID imcID,
							  TNC_MessageTypeList supportedTypes,
							  TNC_UInt32 typeCount);

#define TNC_RESULT_SUCCESS 0
#define TNC_RESULT_NOT_INITIALIZED 1
#define TNC_RESULT_ALREADY_INITIALIZED 2
#define TNC_RESULT_NO_COMMON_VERSION 3
#define TNC_RESULT_INVALID_PARAMETER 6
#define TNC_RESULT_OTHER 9
#define TNC_RESULT_FATAL 10
#define TNC_IFIMC_VERSION_1 1
#define TNC_CONNECTION_STATE_DELETE 5

#define FRAME_END 0xFFFFFF00u
#define FRAME_BEGIN 0xFFFFFF01u
#define FRAME_BATCH_ENDING 0xFFFFFF02u
#define FRAME_STATE 0xFFFFFF03u
#define MAX_MESSAGE (16u * 1024u * 1024u)

/*
 * One slot per IMC ID. wpa_supplicant loads the IMC for every EAP-TNC session and dlopen()
 * hands back the same library, so two interfaces authenticating at once (draft 5.4.1)
 * mean two IMC IDs live in this one copy: each gets its own agent process.
 */
#define MAX_IMC_IDS 16

struct imc_slot {
	int initialized;
	int sock;
	pid_t child;
	TNC_TNCC_SendMessagePointer send_message;
};

static struct imc_slot slots[MAX_IMC_IDS];

static struct imc_slot *slot_of(TNC_IMCID imcID)
{
	return imcID < MAX_IMC_IDS ? &slots[imcID] : NULL;
}

/* The slot of an initialized IMC ID, or NULL (*res says why). */
static struct imc_slot *live_slot(TNC_IMCID imcID, TNC_Result *res)
{
	struct imc_slot *s = slot_of(imcID);

	if (s == NULL) {
		*res = TNC_RESULT_INVALID_PARAMETER;
		return NULL;
	}
	if (!s->initialized) {
		*res = TNC_RESULT_NOT_INITIALIZED;
		return NULL;
	}
	return s;
}

static int timeout_ms(void)
{
	const char *env = getenv("NAC_IMC_TIMEOUT_MS");
	int value = env ? atoi(env) : 0;

	return value > 0 ? value : 60000;
}

static void stop_child(struct imc_slot *s)
{
	int i;

	if (s->sock >= 0) {
		close(s->sock); /* the agent sees EOF and exits */
		s->sock = -1;
	}
	if (s->child <= 0)
		return;
	for (i = 0; i < 100; i++) { /* up to 2 s to exit cleanly */
		pid_t r = waitpid(s->child, NULL, WNOHANG);

		/* ECHILD: the host process ignores SIGCHLD, so the kernel reaped it already */
		if (r == s->child || (r < 0 && errno == ECHILD)) {
			s->child = -1;
			return;
		}
		usleep(20000);
	}
	kill(s->child, SIGKILL);
	waitpid(s->child, NULL, 0);
	s->child = -1;
}

static int start_child(struct imc_slot *s)
{
	int sv[2];
	const char *cmd = getenv("NAC_IMC_COMMAND");
	pid_t pid;

	if (s->sock >= 0)
		return 0;
	if (cmd == NULL || *cmd == '\0')
		cmd = NAC_IMC_COMMAND;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		/* The agent speaks the framing on its stdin/stdout; stderr stays shared. */
		if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
		_exit(127);
	}
	close(sv[1]);
	s->sock = sv[0];
	s->child = pid;
	return 0;
}

static int write_all(int sock, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		/* MSG_NOSIGNAL: a dead agent must not SIGPIPE the supplicant. */
		ssize_t n = send(sock, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

static int read_all(int sock, unsigned char *buf, size_t len, int timeout)
{
	while (len > 0) {
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		int r = poll(&pfd, 1, timeout);
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1; /* error or the agent is too slow */
		n = recv(sock, buf, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static int write_frame(int sock, uint32_t type, const unsigned char *payload, uint32_t len)
{
	unsigned char hdr[8];

	put_u32(hdr, type);
	put_u32(hdr + 4, len);
	if (write_all(sock, hdr, sizeof(hdr)) < 0)
		return -1;
	return len ? write_all(sock, payload, len) : 0;
}

/* Read the agent's answer to one event: message frames relayed to the TNCC, then END. */
static int relay_answer(struct imc_slot *s, TNC_IMCID imcID, TNC_ConnectionID conn)
{
	int timeout = timeout_ms();

	for (;;) {
		unsigned char hdr[8], *buf;
		uint32_t type, len;

		if (read_all(s->sock, hdr, sizeof(hdr), timeout) < 0)
			return -1;
		type = get_u32(hdr);
		len = get_u32(hdr + 4);
		if (type == FRAME_END)
			return 0;
		if (len > MAX_MESSAGE || type >= FRAME_END)
			return -1;
		buf = malloc(len ? len : 1);
		if (buf == NULL)
			return -1;
		if (read_all(s->sock, buf, len, timeout) < 0) {
			free(buf);
			return -1;
		}
		if (s->send_message)
			s->send_message(imcID, conn, buf, len, type);
		free(buf);
	}
}

/* Send one event frame and relay the answer; on any failure the child is dropped. */
static TNC_Result exchange(struct imc_slot *s, TNC_IMCID imcID, TNC_ConnectionID conn,
			   uint32_t type, const unsigned char *payload, uint32_t len)
{
	if (s->sock < 0)
		return TNC_RESULT_OTHER;
	if (write_frame(s->sock, type, payload, len) < 0 || relay_answer(s, imcID, conn) < 0) {
		stop_child(s);
		return TNC_RESULT_FATAL;
	}
	return TNC_RESULT_SUCCESS;
}

EXPORT TNC_Result TNC_IMC_Initialize(TNC_IMCID imcID, TNC_Version minVersion,
				     TNC_Version maxVersion, TNC_Version *pOutActualVersion)
{
	struct imc_slot *s = slot_of(imcID);

	if (s == NULL || pOutActualVersion == NULL)
		return TNC_RESULT_INVALID_PARAMETER;
	if (s->initialized)
		return TNC_RESULT_ALREADY_INITIALIZED;
	if (minVersion > TNC_IFIMC_VERSION_1 || maxVersion < TNC_IFIMC_VERSION_1)
		return TNC_RESULT_NO_COMMON_VERSION;
	*pOutActualVersion = TNC_IFIMC_VERSION_1;
	s->sock = -1;
	s->child = -1;
	s->send_message = NULL;
	s->initialized = 1;
	return TNC_RESULT_SUCCESS;
}

EXPORT TNC_Result TNC_IMC_ProvideBindFunction(TNC_IMCID imcID,
					      TNC_TNCC_BindFunctionPointer bindFunction)
{
	/* Every type: the agent, not the shim, decides which messages concern it. */
	TNC_MessageType all[] = { 0xFFFFFFFFul };
	TNC_TNCC_ReportMessageTypesPointer report = NULL;
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	if (bindFunction == NULL)
		return TNC_RESULT_INVALID_PARAMETER;
	if (bindFunction(imcID, "TNC_TNCC_SendMessage", (void **) &s->send_message) !=
	    TNC_RESULT_SUCCESS || s->send_message == NULL)
		return TNC_RESULT_FATAL;
	if (bindFunction(imcID, "TNC_TNCC_ReportMessageTypes", (void **) &report) ==
	    TNC_RESULT_SUCCESS && report)
		report(imcID, all, 1);
	return TNC_RESULT_SUCCESS;
}

EXPORT TNC_Result TNC_IMC_NotifyConnectionChange(TNC_IMCID imcID, TNC_ConnectionID connectionID,
						 TNC_ConnectionState newState)
{
	unsigned char payload[8];
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	if (s->sock < 0)
		return TNC_RESULT_SUCCESS; /* CREATE/HANDSHAKE come before BeginHandshake */
	put_u32(payload, (uint32_t) connectionID);
	put_u32(payload + 4, (uint32_t) newState);
	res = exchange(s, imcID, connectionID, FRAME_STATE, payload, sizeof(payload));
	if (newState == TNC_CONNECTION_STATE_DELETE)
		stop_child(s);
	return res;
}

EXPORT TNC_Result TNC_IMC_BeginHandshake(TNC_IMCID imcID, TNC_ConnectionID connectionID)
{
	unsigned char payload[4];
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	if (start_child(s) < 0)
		return TNC_RESULT_FATAL;
	put_u32(payload, (uint32_t) connectionID);
	return exchange(s, imcID, connectionID, FRAME_BEGIN, payload, sizeof(payload));
}

EXPORT TNC_Result TNC_IMC_ReceiveMessage(TNC_IMCID imcID, TNC_ConnectionID connectionID,
					 TNC_BufferReference messageBuffer,
					 TNC_UInt32 messageLength, TNC_MessageType messageType)
{
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	if ((messageLength && messageBuffer == NULL) || messageLength > MAX_MESSAGE ||
	    messageType >= FRAME_END)
		return TNC_RESULT_INVALID_PARAMETER;
	return exchange(s, imcID, connectionID, (uint32_t) messageType, messageBuffer,
			(uint32_t) messageLength);
}

EXPORT TNC_Result TNC_IMC_BatchEnding(TNC_IMCID imcID, TNC_ConnectionID connectionID)
{
	unsigned char payload[4];
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	put_u32(payload, (uint32_t) connectionID);
	return exchange(s, imcID, connectionID, FRAME_BATCH_ENDING, payload, sizeof(payload));
}

EXPORT TNC_Result TNC_IMC_Terminate(TNC_IMCID imcID)
{
	TNC_Result res;
	struct imc_slot *s = live_slot(imcID, &res);

	if (s == NULL)
		return res;
	stop_child(s);
	s->send_message = NULL;
	s->initialized = 0;
	return TNC_RESULT_SUCCESS;
}
