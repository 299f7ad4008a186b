/*
 * dmapi.h - the X/Open XDSM Data Storage Management API (DMAPI) for pdm.
 *
 * This header declares every type, constant, macro and function of the
 * XDSM specification (The Open Group CAE C429, February 1997) under its
 * standard name.  Where the specification leaves a value or layout to the
 * implementation, the choice made by XFS's libdm is used, so programs
 * written for the XFS or GPFS DMAPI compile against it unchanged
 * (source compatibility; binary compatibility with either is not a goal).
 *
 * libdmapi (link with -ldmapi) implements these calls across a pdm
 * cluster: a session lives on the node where it was created, and events
 * raised on any node are delivered to it.  See docs/dmapi-conformance.md
 * for what is implemented, where each call may run, and the deviations.
 *
 * pdm extensions are marked "pdm extension" and use the PDM_ prefix for
 * new macros; the one field added to a standard struct (ev_nodeid in
 * dm_eventmsg_t) sits after all standard members.
 *
 * The header is plain C (C99 or later) and C++; it needs only system
 * headers.  String arguments that are only read are declared const char *;
 * callers written against the specification's char * compile unchanged.
 */
#ifndef PDM_DMAPI_H
#define PDM_DMAPI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Implementation-defined scalar types                                 */
/* ------------------------------------------------------------------ */

typedef int64_t  dm_attrloc_t;  /* cursor for dm_get_dirattrs/bulkattr/bulkall */
typedef unsigned int dm_boolean_t; /* DM_TRUE or DM_FALSE */
typedef uint64_t dm_eventset_t; /* bit mask, bit n = dm_eventtype_t n */
typedef uint64_t dm_fsid_t;     /* file system identifier */
typedef uint64_t dm_ino_t;      /* inode number */
typedef uint32_t dm_igen_t;     /* inode generation number */
typedef int64_t  dm_off_t;      /* file offset */
typedef uint64_t dm_size_t;     /* byte count */
typedef int64_t  dm_ssize_t;    /* byte count or -1 */

/* Event sequence number.  XFS used unsigned int; pdm numbers events
 * cluster-wide and uses 64 bits so the counter does not wrap. */
typedef uint64_t dm_sequence_t;

/* Session id.  XFS used int; pdm ids are (SM term << 32 | counter) and
 * need 64 bits.  0 is DM_NO_SESSION and is never a live session. */
typedef uint64_t dm_sessid_t;

/* Event token.  XFS used int; pdm tokens are ((rank + 1) << 48 | counter).
 * pdm never hands out DM_INVALID_TOKEN (0, carried by asynchronous events)
 * or DM_NO_TOKEN (all ones) as the token of an event. */
typedef uint64_t dm_token_t;

/* Node (pdm rank) that raised an event; see ev_nodeid (pdm extension). */
typedef uint32_t dm_nodeid_t;

/* XFS's fixed-width stand-ins for dev_t, mode_t and nlink_t. */
typedef int64_t  dm_dev_t;
typedef int      dm_mode_t;
typedef int      dm_nlink_t;

/* ------------------------------------------------------------------ */
/* Constants                                                           */
/* ------------------------------------------------------------------ */

#define DM_TRUE                 1
#define DM_FALSE                0

#define DM_NO_SESSION           ((dm_sessid_t)0)
#define DM_SESSION_INFO_LEN     256     /* includes the terminating NUL */

#define DM_INVALID_TOKEN        ((dm_token_t)0)   /* XFS: 0; async events */
#define DM_NO_TOKEN             ((dm_token_t)-1)  /* XFS: -1; "no token held" */

#define DM_INVALID_HANP         NULL
#define DM_INVALID_HLEN         ((size_t)0)
#define DM_GLOBAL_HANP          ((void *)1)       /* the global handle */
#define DM_GLOBAL_HLEN          ((size_t)1)

#define DM_MAX_HANDLE_SIZE      160     /* largest handle, bytes: pdm handles carry the kernel file handle (XFS: 56) */
#define DM_ATTR_NAME_SIZE       8       /* bytes in a DM attribute name */

#define DM_VER_STR_CONTENTS     "pdm DMAPI (XDSM) API, Release 1.1."

/* flags of dm_get_events */
#define DM_EV_WAIT              0x1     /* block until a message arrives */

/* flags of dm_request_right */
#define DM_RR_WAIT              0x1     /* block until the right is granted */

/* flags of dm_write_invis */
#define DM_WRITE_SYNC           0x1     /* data is on stable storage at return */

/* me_mode of dm_mount_event_t */
#define DM_MOUNT_RDONLY         0x1

/* ne_mode of dm_namesp_event_t for DM_EVENT_PREUNMOUNT / DM_EVENT_UNMOUNT */
#define DM_UNMOUNT_FORCE        0x1

/* Event-raising flags (as XFS's kernel side).  pdm uses DM_FLAGS_NDELAY
 * for an operation whose caller opened the file non-blocking: after a
 * dm_pending reply the operation fails with EAGAIN instead of waiting. */
#define DM_FLAGS_NDELAY         0x001
#define DM_FLAGS_UNWANTED       0x002   /* event not in the fs event set */

/* rg_flags of dm_region_t */
#define DM_REGION_NOEVENT       0x0
#define DM_REGION_READ          0x1
#define DM_REGION_WRITE         0x2
#define DM_REGION_TRUNCATE      0x4

/* mask of dm_get_fileattr, dm_set_fileattr, dm_get_dirattrs,
 * dm_get_bulkattr and dm_get_bulkall */
#define DM_AT_MODE              0x0001
#define DM_AT_UID               0x0002
#define DM_AT_GID               0x0004
#define DM_AT_ATIME             0x0008
#define DM_AT_MTIME             0x0010
#define DM_AT_CTIME             0x0020
#define DM_AT_SIZE              0x0040
#define DM_AT_DTIME             0x0080
#define DM_AT_HANDLE            0x0100
#define DM_AT_EMASK             0x0200
#define DM_AT_PMANR             0x0400
#define DM_AT_PATTR             0x0800
#define DM_AT_STAT              0x1000
#define DM_AT_CFLAG             0x2000

/* pdm extension: dm_eventmsg_t has the ev_nodeid member. */
#define PDM_DMAPI_HAS_EV_NODEID 1
/* pdm extension: ev_nodeid of a message no node raised (none today). */
#define PDM_DMAPI_NO_NODEID     ((dm_nodeid_t)0xFFFFFFFFu)

/* ------------------------------------------------------------------ */
/* Enumerations                                                        */
/* ------------------------------------------------------------------ */

typedef enum {
	DM_EVENT_INVALID     = -1,
	DM_EVENT_CANCEL      = 0,
	DM_EVENT_MOUNT       = 1,
	DM_EVENT_PREUNMOUNT  = 2,
	DM_EVENT_UNMOUNT     = 3,
	DM_EVENT_DEBUT       = 4,
	DM_EVENT_CREATE      = 5,
	DM_EVENT_CLOSE       = 6,
	DM_EVENT_POSTCREATE  = 7,
	DM_EVENT_REMOVE      = 8,
	DM_EVENT_POSTREMOVE  = 9,
	DM_EVENT_RENAME      = 10,
	DM_EVENT_POSTRENAME  = 11,
	DM_EVENT_LINK        = 12,
	DM_EVENT_POSTLINK    = 13,
	DM_EVENT_SYMLINK     = 14,
	DM_EVENT_POSTSYMLINK = 15,
	DM_EVENT_READ        = 16,
	DM_EVENT_WRITE       = 17,
	DM_EVENT_TRUNCATE    = 18,
	DM_EVENT_ATTRIBUTE   = 19,
	DM_EVENT_DESTROY     = 20,
	DM_EVENT_NOSPACE     = 21,
	DM_EVENT_USER        = 22,
	DM_EVENT_MAX         = 23       /* number of event types */
} dm_eventtype_t;

typedef enum {
	DM_CONFIG_INVALID = 0,
	DM_CONFIG_BULKALL,
	DM_CONFIG_CREATE_BY_HANDLE,
	DM_CONFIG_DTIME_OVERLOAD,
	DM_CONFIG_LEGACY,
	DM_CONFIG_LOCK_UPGRADE,
	DM_CONFIG_MAX_ATTR_ON_DESTROY,
	DM_CONFIG_MAX_ATTRIBUTE_SIZE,
	DM_CONFIG_MAX_HANDLE_SIZE,
	DM_CONFIG_MAX_MANAGED_REGIONS,
	DM_CONFIG_MAX_MESSAGE_DATA,
	DM_CONFIG_OBJ_REF,
	DM_CONFIG_PENDING,
	DM_CONFIG_PERS_ATTRIBUTES,
	DM_CONFIG_PERS_EVENTS,
	DM_CONFIG_PERS_INHERIT_ATTRIBS,
	DM_CONFIG_PERS_MANAGED_REGIONS,
	DM_CONFIG_PUNCH_HOLE,
	DM_CONFIG_TOTAL_ATTRIBUTE_SPACE,
	DM_CONFIG_WILL_RETRY,
	DM_CONFIG_MAX                   /* number of values; not a valid flag */
} dm_config_t;

typedef enum {
	DM_EXTENT_INVALID = 0,
	DM_EXTENT_RES     = 1,          /* allocated (resident) data */
	DM_EXTENT_HOLE    = 2           /* hole */
} dm_extenttype_t;

typedef enum {
	DM_MSGTYPE_INVALID = 0,
	DM_MSGTYPE_SYNC    = 1,
	DM_MSGTYPE_ASYNC   = 2
} dm_msgtype_t;

typedef enum {
	DM_RESP_INVALID  = 0,
	DM_RESP_CONTINUE = 1,
	DM_RESP_ABORT    = 2,
	DM_RESP_DONTCARE = 3
} dm_response_t;

typedef enum {
	DM_RIGHT_NULL   = 0,
	DM_RIGHT_SHARED = 1,
	DM_RIGHT_EXCL   = 2
} dm_right_t;

/* ------------------------------------------------------------------ */
/* Event sets                                                          */
/* ------------------------------------------------------------------ */

#define DMEV_SET(event_type, event_list) \
	((event_list) |= ((dm_eventset_t)1 << (event_type)))
#define DMEV_CLR(event_type, event_list) \
	((event_list) &= ~((dm_eventset_t)1 << (event_type)))
#define DMEV_ISSET(event_type, event_list) \
	((int)((((event_list) >> (event_type)) & (dm_eventset_t)1) != 0))
#define DMEV_ZERO(event_list) \
	((event_list) = (dm_eventset_t)0)

/* ------------------------------------------------------------------ */
/* Variable-length data and lists                                      */
/* ------------------------------------------------------------------ */

/* Variable-length member: vd_offset is a byte offset from the start of the
 * structure that contains this dm_vardata_t, vd_length the byte count. */
typedef struct {
	int32_t  vd_offset;
	uint32_t vd_length;
} dm_vardata_t;

/* Pointer (of pointer type `type`) to the data of member `field` of *p. */
#define DM_GET_VALUE(p, field, type) \
	((type)((char *)(p) + (p)->field.vd_offset))

/* Byte length of the data of member `field` of *p. */
#define DM_GET_LEN(p, field) \
	((p)->field.vd_length)

/* Next element of a returned list, or NULL after the last one.  _link is
 * the byte distance from *p to the next element; 0 marks the last. */
#define DM_STEP_TO_NEXT(p, type) \
	((type)((p)->_link ? (char *)(p) + (p)->_link : (char *)NULL))

/* ------------------------------------------------------------------ */
/* Structures                                                          */
/* (_link members implement DM_STEP_TO_NEXT; do not use them directly.) */
/* ------------------------------------------------------------------ */

typedef struct dm_attrname {
	unsigned char an_chars[DM_ATTR_NAME_SIZE];
} dm_attrname_t;

typedef struct dm_attrlist {
	int32_t       _link;
	dm_attrname_t al_name;
	dm_vardata_t  al_data;
} dm_attrlist_t;

typedef struct dm_dispinfo {
	int32_t       _link;
	uint32_t      di_pad1;          /* reserved */
	dm_vardata_t  di_fshandle;
	dm_eventset_t di_eventset;
} dm_dispinfo_t;

/* One event message as returned by dm_get_events and dm_find_eventmsg. */
typedef struct dm_eventmsg {
	int32_t        _link;
	dm_eventtype_t ev_type;
	dm_token_t     ev_token;
	dm_sequence_t  ev_sequence;
	dm_vardata_t   ev_data;         /* the event-specific structure below */
	dm_nodeid_t    ev_nodeid;       /* pdm extension: rank that raised it */
	uint32_t       ev_pad1;         /* pdm: reserved, zero */
} dm_eventmsg_t;

/* ev_data of DM_EVENT_CANCEL */
typedef struct dm_cancel_event {
	dm_sequence_t ce_sequence;
	dm_token_t    ce_token;
} dm_cancel_event_t;

/* ev_data of DM_EVENT_READ, DM_EVENT_WRITE, DM_EVENT_TRUNCATE */
typedef struct dm_data_event {
	dm_vardata_t de_handle;
	dm_off_t     de_offset;
	dm_size_t    de_length;
} dm_data_event_t;

/* ev_data of DM_EVENT_DESTROY */
typedef struct dm_destroy_event {
	dm_vardata_t  ds_handle;
	dm_attrname_t ds_attrname;
	dm_vardata_t  ds_attrcopy;
} dm_destroy_event_t;

/* ev_data of DM_EVENT_MOUNT */
typedef struct dm_mount_event {
	dm_mode_t    me_mode;
	dm_vardata_t me_handle1;        /* file system */
	dm_vardata_t me_handle2;        /* directory mounted on */
	dm_vardata_t me_name1;          /* mount point path */
	dm_vardata_t me_name2;          /* device / source */
	dm_vardata_t me_roothandle;     /* root of the mounted file system */
} dm_mount_event_t;

/* ev_data of the namespace events, PREUNMOUNT, UNMOUNT, NOSPACE, DEBUT,
 * CLOSE, ATTRIBUTE */
typedef struct dm_namesp_event {
	dm_mode_t    ne_mode;
	dm_vardata_t ne_handle1;
	dm_vardata_t ne_handle2;
	dm_vardata_t ne_name1;
	dm_vardata_t ne_name2;
	int          ne_retcode;        /* result of the operation (post events) */
} dm_namesp_event_t;

typedef struct dm_extent {
	dm_extenttype_t ex_type;
	uint32_t        ex_pad1;        /* reserved */
	dm_off_t        ex_offset;
	dm_size_t       ex_length;
} dm_extent_t;

typedef struct dm_fileattr {
	dm_mode_t fa_mode;
	uid_t     fa_uid;
	gid_t     fa_gid;
	time_t    fa_atime;
	time_t    fa_mtime;
	time_t    fa_ctime;
	time_t    fa_dtime;
	uint32_t  fa_pad1;              /* reserved */
	dm_off_t  fa_size;
} dm_fileattr_t;

typedef struct dm_inherit {
	dm_attrname_t ih_name;
	mode_t        ih_filetype;
} dm_inherit_t;

typedef struct dm_region {
	dm_off_t  rg_offset;
	dm_size_t rg_size;
	uint32_t  rg_flags;             /* DM_REGION_* bits */
	uint32_t  rg_pad1;              /* reserved */
} dm_region_t;

/* File status as returned by dm_get_fileattr, dm_get_dirattrs and
 * dm_get_bulkattr.  Members and order follow XFS. */
typedef struct dm_stat {
	int32_t       _link;
	dm_vardata_t  dt_handle;
	dm_vardata_t  dt_compname;      /* entry name (dm_get_dirattrs) */
	int           dt_nevents;
	dm_eventset_t dt_emask;
	int           dt_pers;
	int           dt_pmanreg;
	time_t        dt_dtime;
	uint32_t      dt_change;
	uint32_t      dt_pad1;          /* reserved */
	dm_dev_t      dt_dev;
	dm_ino_t      dt_ino;
	dm_mode_t     dt_mode;
	dm_nlink_t    dt_nlink;
	uid_t         dt_uid;
	gid_t         dt_gid;
	dm_dev_t      dt_rdev;
	uint32_t      dt_pad2;          /* reserved */
	dm_off_t      dt_size;
	time_t        dt_atime;
	time_t        dt_mtime;
	time_t        dt_ctime;
	uint32_t      dt_blksize;
	dm_size_t     dt_blocks;

	/* Non-standard, file-system-specific part, laid out as XFS's. */
	uint64_t      dt_pad3;          /* reserved */
	int           dt_fstype;
	union {
		struct {
			dm_igen_t      igen;
			uint32_t       xflags;
			uint32_t       extsize;
			uint32_t       extents;
			unsigned short aextents;
			unsigned short dmstate;
		} sgi_xfs;
	} fsys_dep;
} dm_stat_t;

/* XFS names for the file-system-specific members of dm_stat_t. */
#define dt_xfs_igen     fsys_dep.sgi_xfs.igen
#define dt_xfs_xflags   fsys_dep.sgi_xfs.xflags
#define dt_xfs_extsize  fsys_dep.sgi_xfs.extsize
#define dt_xfs_extents  fsys_dep.sgi_xfs.extents
#define dt_xfs_aextents fsys_dep.sgi_xfs.aextents
#define dt_xfs_dmstate  fsys_dep.sgi_xfs.dmstate

/* Entry of dm_get_bulkall: status plus the requested DM attribute. */
typedef struct dm_xstat {
	dm_stat_t    dx_statinfo;
	dm_vardata_t dx_attrdata;
} dm_xstat_t;

typedef struct dm_timestruct {
	time_t dm_tv_sec;
	int    dm_tv_nsec;
} dm_timestruct_t;

/* ------------------------------------------------------------------ */
/* Functions (all 67 of XDSM).  Unless noted they return 0 on success,  */
/* -1 with errno set on failure.                                        */
/* ------------------------------------------------------------------ */

/* --- sessions --- */

/* Connect to the DMAPI service; *versionstrpp receives the version string. */
extern int dm_init_service(char **versionstrpp);
/* Create a session, or assume oldsid (after its node failed). */
extern int dm_create_session(dm_sessid_t oldsid, const char *sessinfop,
	dm_sessid_t *newsidp);
/* Destroy a session that has no queued or outstanding events. */
extern int dm_destroy_session(dm_sessid_t sid);
/* List all session ids in the cluster. */
extern int dm_getall_sessions(unsigned int nelem, dm_sessid_t *sidbufp,
	unsigned int *nelemp);
/* Return a session's information string. */
extern int dm_query_session(dm_sessid_t sid, size_t buflen, void *bufp,
	size_t *rlenp);

/* --- events --- */

/* Receive up to maxmsgs event messages (0: as many as fit). */
extern int dm_get_events(dm_sessid_t sid, unsigned int maxmsgs,
	unsigned int flags, size_t buflen, void *bufp, size_t *rlenp);
/* Answer a synchronous event and release its token. */
extern int dm_respond_event(dm_sessid_t sid, dm_token_t token,
	dm_response_t response, int reterror, size_t buflen, void *respbufp);
/* Move an outstanding event to another session. */
extern int dm_move_event(dm_sessid_t srcsid, dm_token_t token,
	dm_sessid_t targetsid, dm_token_t *rtokenp);
/* Tell the event's originator that the answer will take time. */
extern int dm_pending(dm_sessid_t sid, dm_token_t token,
	dm_timestruct_t *delay);
/* Return the message of an outstanding event. */
extern int dm_find_eventmsg(dm_sessid_t sid, dm_token_t token,
	size_t buflen, void *bufp, size_t *rlenp);
/* List a session's outstanding tokens. */
extern int dm_getall_tokens(dm_sessid_t sid, unsigned int nelem,
	dm_token_t *tokenbufp, unsigned int *nelemp);
/* Create a user-event token on the session without delivering a message. */
extern int dm_create_userevent(dm_sessid_t sid, size_t msglen,
	void *msgdatap, dm_token_t *tokenp);
/* Send a DM_EVENT_USER message to a session. */
extern int dm_send_msg(dm_sessid_t targetsid, dm_msgtype_t msgtype,
	size_t buflen, void *bufp);

/* --- dispositions and event lists --- */

/* Set which events of a file system (or mount, global handle) go to sid. */
extern int dm_set_disp(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_eventset_t *eventsetp, unsigned int maxevent);
/* List the session's dispositions per file system. */
extern int dm_getall_disp(dm_sessid_t sid, size_t buflen, void *bufp,
	size_t *rlenp);
/* Set the events enabled on a file system, directory or file. */
extern int dm_set_eventlist(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_eventset_t *eventsetp, unsigned int maxevent);
/* Get the events enabled on a file system, directory or file. */
extern int dm_get_eventlist(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int nelem, dm_eventset_t *eventsetp,
	unsigned int *nelemp);
/* Get the events the implementation can raise for an object. */
extern int dm_get_config_events(void *hanp, size_t hlen, unsigned int nelem,
	dm_eventset_t *eventsetp, unsigned int *nelemp);
/* Name the attribute copied into DM_EVENT_DESTROY messages of a file system. */
extern int dm_set_return_on_destroy(dm_sessid_t sid, void *hanp,
	size_t hlen, dm_token_t token, dm_attrname_t *attrnamep,
	dm_boolean_t enable);
/* Return the mount event message of a mounted file system. */
extern int dm_get_mountinfo(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, size_t buflen, void *bufp, size_t *rlenp);

/* --- handles (library calls; the handle buffers are malloc'ed) --- */

/* Handle of the object a path names. */
extern int dm_path_to_handle(const char *path, void **hanpp, size_t *hlenp);
/* Handle of an open file. */
extern int dm_fd_to_handle(int fd, void **hanpp, size_t *hlenp);
/* Handle of the file system containing path. */
extern int dm_path_to_fshandle(const char *path, void **hanpp,
	size_t *hlenp);
/* Handle of the file system an object handle belongs to. */
extern int dm_handle_to_fshandle(void *hanp, size_t hlen, void **fshanpp,
	size_t *fshlenp);
/* Compare two handles: 0 if equal, else <0 or >0. */
extern int dm_handle_cmp(void *hanp1, size_t hlen1, void *hanp2,
	size_t hlen2);
/* Free a handle returned by this library. */
extern void dm_handle_free(void *hanp, size_t hlen);
/* Hash value of a handle. */
extern unsigned int dm_handle_hash(void *hanp, size_t hlen);
/* DM_TRUE if the handle is well-formed. */
extern dm_boolean_t dm_handle_is_valid(void *hanp, size_t hlen);
/* File system id of a handle. */
extern int dm_handle_to_fsid(void *hanp, size_t hlen, dm_fsid_t *fsidp);
/* Inode number of a file handle. */
extern int dm_handle_to_ino(void *hanp, size_t hlen, dm_ino_t *inop);
/* Inode generation of a file handle. */
extern int dm_handle_to_igen(void *hanp, size_t hlen, dm_igen_t *igenp);
/* Build a file handle from its parts. */
extern int dm_make_handle(dm_fsid_t *fsidp, dm_ino_t *inop,
	dm_igen_t *igenp, void **hanpp, size_t *hlenp);
/* Build a file-system handle from an fsid. */
extern int dm_make_fshandle(dm_fsid_t *fsidp, void **hanpp, size_t *hlenp);
/* Path of targhanp, found in directory dirhanp. */
extern int dm_handle_to_path(void *dirhanp, size_t dirhlen, void *targhanp,
	size_t targhlen, size_t buflen, char *pathbufp, size_t *rlenp);

/* --- DM attributes --- */

/* Create or replace a DM attribute. */
extern int dm_set_dmattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_attrname_t *attrnamep, int setdtime,
	size_t buflen, void *bufp);
/* Read a DM attribute. */
extern int dm_get_dmattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_attrname_t *attrnamep, size_t buflen,
	void *bufp, size_t *rlenp);
/* Remove a DM attribute. */
extern int dm_remove_dmattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, int setdtime, dm_attrname_t *attrnamep);
/* List all DM attributes of an object (dm_attrlist_t chain). */
extern int dm_getall_dmattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, size_t buflen, void *bufp, size_t *rlenp);

/* --- file attributes and scans --- */

/* Get the attributes selected by mask (DM_AT_*). */
extern int dm_get_fileattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int mask, dm_stat_t *statp);
/* Set the attributes selected by mask without raising events. */
extern int dm_set_fileattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int mask, dm_fileattr_t *attrp);
/* Read directory entries with their attributes (dm_stat_t chain). */
extern int dm_get_dirattrs(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int mask, dm_attrloc_t *locp,
	size_t buflen, void *bufp, size_t *rlenp);
/* Scan all files of a file system (dm_stat_t chain). */
extern int dm_get_bulkattr(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int mask, dm_attrloc_t *locp,
	size_t buflen, void *bufp, size_t *rlenp);
/* Scan all files with one DM attribute each (dm_xstat_t chain). */
extern int dm_get_bulkall(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int mask, dm_attrname_t *attrnamep,
	dm_attrloc_t *locp, size_t buflen, void *bufp, size_t *rlenp);
/* Initialise a scan cursor for dm_get_dirattrs/bulkattr/bulkall. */
extern int dm_init_attrloc(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_attrloc_t *locp);

/* --- managed regions and data --- */

/* Replace a file's managed regions. */
extern int dm_set_region(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int nelem, dm_region_t *regbufp,
	dm_boolean_t *exactflagp);
/* Get a file's managed regions. */
extern int dm_get_region(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int nelem, dm_region_t *regbufp,
	unsigned int *nelemp);
/* Map a file's resident extents and holes from *offp on. */
extern int dm_get_allocinfo(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_off_t *offp, unsigned int nelem,
	dm_extent_t *extentp, unsigned int *nelemp);
/* Round a range to what dm_punch_hole would free. */
extern int dm_probe_hole(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_off_t off, dm_size_t len, dm_off_t *roffp,
	dm_size_t *rlenp);
/* Free a file's storage in a range (len 0: to end of file). */
extern int dm_punch_hole(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_off_t off, dm_size_t len);
/* Read file data without raising events; returns bytes read or -1. */
extern dm_ssize_t dm_read_invis(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_off_t off, dm_size_t len, void *bufp);
/* Write file data without raising events; returns bytes written or -1. */
extern dm_ssize_t dm_write_invis(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, int flags, dm_off_t off, dm_size_t len, void *bufp);
/* Flush a file's data to stable storage. */
extern int dm_sync_by_handle(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token);

/* --- access rights --- */

/* Acquire a right on an object for the token. */
extern int dm_request_right(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int flags, dm_right_t right);
/* Release the token's right on an object. */
extern int dm_release_right(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token);
/* Return the token's right on an object. */
extern int dm_query_right(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_right_t *rightp);
/* Upgrade a shared right to exclusive. */
extern int dm_upgrade_right(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token);
/* Downgrade an exclusive right to shared. */
extern int dm_downgrade_right(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token);

/* --- object references --- */

/* Hold a reference on an object for the token. */
extern int dm_obj_ref_hold(dm_sessid_t sid, dm_token_t token, void *hanp,
	size_t hlen);
/* Release a reference taken by dm_obj_ref_hold. */
extern int dm_obj_ref_rele(dm_sessid_t sid, dm_token_t token, void *hanp,
	size_t hlen);
/* 1 if the token holds a reference on the object, 0 if not, -1 on error. */
extern int dm_obj_ref_query(dm_sessid_t sid, dm_token_t token, void *hanp,
	size_t hlen);

/* --- configuration --- */

/* Value of one implementation limit or option (dm_config_t). */
extern int dm_get_config(void *hanp, size_t hlen, dm_config_t flagname,
	dm_size_t *retvalp);

/* --- creation by handle --- */

/* Create a file with a given handle in directory dirhanp. */
extern int dm_create_by_handle(dm_sessid_t sid, void *dirhanp,
	size_t dirhlen, dm_token_t token, void *hanp, size_t hlen,
	const char *cname);
/* Create a directory with a given handle in directory dirhanp. */
extern int dm_mkdir_by_handle(dm_sessid_t sid, void *dirhanp,
	size_t dirhlen, dm_token_t token, void *hanp, size_t hlen,
	const char *cname);
/* Create a symbolic link with a given handle in directory dirhanp. */
extern int dm_symlink_by_handle(dm_sessid_t sid, void *dirhanp,
	size_t dirhlen, dm_token_t token, void *hanp, size_t hlen,
	const char *cname, const char *path);

/* --- attribute inheritance --- */

/* Mark a DM attribute to be copied to new objects of a file type. */
extern int dm_set_inherit(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_attrname_t *attrnamep, mode_t mode);
/* Stop inheriting a DM attribute. */
extern int dm_clear_inherit(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, dm_attrname_t *attrnamep);
/* List the inherited DM attributes of a file system. */
extern int dm_getall_inherit(dm_sessid_t sid, void *hanp, size_t hlen,
	dm_token_t token, unsigned int nelem, dm_inherit_t *inheritbufp,
	unsigned int *nelemp);

#ifdef __cplusplus
}
#endif

#endif /* PDM_DMAPI_H */
