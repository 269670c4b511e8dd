;; verification: verifier registry, facility registry and generation reports.
;; Event shapes and error codes are specified in EVENTS.md; keep both in sync.

(define-constant ERR-NOT-OWNER (err u100))
(define-constant ERR-NOT-PENDING-OWNER (err u101))
(define-constant ERR-PAUSED (err u102))
(define-constant ERR-NOT-VERIFIER (err u103))
(define-constant ERR-VERIFIER-EXISTS (err u104))
(define-constant ERR-VERIFIER-NOT-FOUND (err u105))
(define-constant ERR-INVALID-NAME (err u106))
(define-constant ERR-INVALID-COUNTRY (err u107))
(define-constant ERR-INVALID-COORDINATES (err u108))
(define-constant ERR-INVALID-CODE (err u109))
(define-constant ERR-INVALID-CAPACITY (err u110))
(define-constant ERR-INVALID-DATE (err u111))
(define-constant ERR-INVALID-URI (err u112))
(define-constant ERR-FACILITY-NOT-FOUND (err u113))
(define-constant ERR-INVALID-FACILITY-STATUS (err u114))
(define-constant ERR-NOT-FACILITY-OWNER (err u115))
(define-constant ERR-FACILITY-NOT-ACTIVE (err u116))
(define-constant ERR-INVALID-PERIOD (err u117))
(define-constant ERR-INVALID-ENERGY (err u118))
(define-constant ERR-ENERGY-EXCEEDS-CAPACITY (err u119))
(define-constant ERR-PERIOD-OVERLAP (err u120))
(define-constant ERR-REPORT-NOT-FOUND (err u121))
(define-constant ERR-INVALID-REPORT-STATUS (err u122))
(define-constant ERR-NOT-SUBMITTER (err u123))
(define-constant ERR-NOT-MINTER (err u124))
(define-constant ERR-CONFLICT-OF-INTEREST (err u125))

;; Only the certificate contract may mark a report minted; a literal keeps deployment to one step.
(define-constant MINTER .rec-nft)

(define-data-var contract-owner principal tx-sender)
(define-data-var pending-owner (optional principal) none)
(define-data-var paused bool false)
(define-data-var last-facility-id uint u0)
(define-data-var last-report-id uint u0)

(define-map verifiers principal { name: (string-utf8 64), active: bool })

(define-map facilities uint {
  owner: principal,
  name: (string-utf8 128),
  country: (string-ascii 2),
  subdivision: (string-ascii 6),
  market-boundary: (string-ascii 32),
  grid-zone: (string-ascii 32),
  latitude: int,
  longitude: int,
  energy-source: (string-ascii 8),
  technology: (string-ascii 8),
  capacity-w: uint,
  commissioning-date: uint,
  repowering-date: (optional uint),
  public-support: bool,
  irec-code: (string-ascii 32),
  meter-gsrn: (string-ascii 32),
  metadata-uri: (string-ascii 256),
  status: (string-ascii 10),
  verifier: (optional principal),
  registered-at: uint,
  last-attested-end: uint,
})

(define-map reports uint {
  facility-id: uint,
  period-start: uint,
  period-end: uint,
  wh: uint,
  evidence-hash: (buff 32),
  submitter: principal,
  verifier: (optional principal),
  revoked-by: (optional principal),
  status: (string-ascii 10),
  reason: (string-utf8 256),
  token-id: (optional uint),
  submitted-at: uint,
  updated-at: uint,
})

;; ---------------------------------------------------------------- admin

(define-private (assert-owner)
  (ok (asserts! (is-eq tx-sender (var-get contract-owner)) ERR-NOT-OWNER)))

(define-private (assert-not-paused)
  (ok (asserts! (not (var-get paused)) ERR-PAUSED)))

(define-public (transfer-ownership (new-owner principal))
  (begin
    (try! (assert-owner))
    (var-set pending-owner (some new-owner))
    (print { event: "ownership-transfer-started", owner: tx-sender, pending-owner: new-owner })
    (ok true)))

(define-public (accept-ownership)
  (let ((previous (var-get contract-owner)))
    (asserts! (is-eq (some tx-sender) (var-get pending-owner)) ERR-NOT-PENDING-OWNER)
    (var-set contract-owner tx-sender)
    (var-set pending-owner none)
    (print { event: "ownership-transferred", previous-owner: previous, new-owner: tx-sender })
    (ok true)))

(define-public (set-paused (value bool))
  (begin
    (try! (assert-owner))
    (var-set paused value)
    (print { event: "pause-changed", paused: value, by: tx-sender })
    (ok true)))

;; ---------------------------------------------------------------- verifiers

(define-public (add-verifier (verifier principal) (name (string-utf8 64)))
  (begin
    (try! (assert-owner))
    (asserts! (> (len name) u0) ERR-INVALID-NAME)
    (asserts! (not (is-active-verifier verifier)) ERR-VERIFIER-EXISTS)
    (map-set verifiers verifier { name: name, active: true })
    (print { event: "verifier-added", verifier: verifier, name: name, active: true, by: tx-sender })
    (ok true)))

(define-public (revoke-verifier (verifier principal))
  (let ((record (unwrap! (map-get? verifiers verifier) ERR-VERIFIER-NOT-FOUND)))
    (try! (assert-owner))
    (asserts! (get active record) ERR-VERIFIER-NOT-FOUND)
    (map-set verifiers verifier (merge record { active: false }))
    (print { event: "verifier-revoked", verifier: verifier, name: (get name record), active: false, by: tx-sender })
    (ok true)))

(define-read-only (is-active-verifier (who principal))
  (default-to false (get active (map-get? verifiers who))))

(define-read-only (get-verifier (who principal))
  (map-get? verifiers who))

;; ---------------------------------------------------------------- facilities

(define-private (has-prefix (code (string-ascii 8)) (prefix (string-ascii 2)))
  (and (is-eq (len code) u5) (is-eq (slice? code u0 u2) (some prefix))))

(define-private (emit-facility (kind (string-ascii 24)) (facility-id uint) (reason (string-utf8 256)))
  (let ((facility (unwrap-panic (map-get? facilities facility-id))))
    (print (merge { event: kind, facility-id: facility-id, actor: tx-sender, reason: reason } facility))
    (ok facility-id)))

(define-public (register-facility
    (name (string-utf8 128))
    (country (string-ascii 2))
    (subdivision (string-ascii 6))
    (market-boundary (string-ascii 32))
    (grid-zone (string-ascii 32))
    (latitude int)
    (longitude int)
    (energy-source (string-ascii 8))
    (technology (string-ascii 8))
    (capacity-w uint)
    (commissioning-date uint)
    (repowering-date (optional uint))
    (public-support bool)
    (irec-code (string-ascii 32))
    (meter-gsrn (string-ascii 32))
    (metadata-uri (string-ascii 256)))
  (let ((facility-id (+ (var-get last-facility-id) u1)))
    (try! (assert-not-paused))
    (asserts! (> (len name) u0) ERR-INVALID-NAME)
    (asserts! (and (is-eq (len country) u2) (> (len market-boundary) u0)) ERR-INVALID-COUNTRY)
    (asserts! (and (<= latitude 90000000) (>= latitude -90000000)
                   (<= longitude 180000000) (>= longitude -180000000)) ERR-INVALID-COORDINATES)
    (asserts! (and (has-prefix energy-source "ES") (has-prefix technology "TC")) ERR-INVALID-CODE)
    (asserts! (> capacity-w u0) ERR-INVALID-CAPACITY)
    (asserts! (> commissioning-date u0) ERR-INVALID-DATE)
    (asserts! (match repowering-date r (> r commissioning-date) true) ERR-INVALID-DATE)
    (asserts! (> (len metadata-uri) u0) ERR-INVALID-URI)
    (map-set facilities facility-id {
      owner: tx-sender, name: name, country: country, subdivision: subdivision,
      market-boundary: market-boundary, grid-zone: grid-zone, latitude: latitude,
      longitude: longitude, energy-source: energy-source, technology: technology,
      capacity-w: capacity-w, commissioning-date: commissioning-date,
      repowering-date: repowering-date, public-support: public-support, irec-code: irec-code,
      meter-gsrn: meter-gsrn, metadata-uri: metadata-uri, status: "pending", verifier: none,
      registered-at: stacks-block-height, last-attested-end: u0 })
    (var-set last-facility-id facility-id)
    (emit-facility "facility-registered" facility-id u"")))

;; One place for every verifier decision on a facility: checks role, conflict and source status.
(define-private (decide-facility
    (facility-id uint) (from-statuses (list 3 (string-ascii 10))) (to-status (string-ascii 10))
    (kind (string-ascii 24)) (reason (string-utf8 256)))
  (let ((facility (unwrap! (map-get? facilities facility-id) ERR-FACILITY-NOT-FOUND)))
    (try! (assert-not-paused))
    (asserts! (is-active-verifier tx-sender) ERR-NOT-VERIFIER)
    (asserts! (not (is-eq tx-sender (get owner facility))) ERR-CONFLICT-OF-INTEREST)
    (asserts! (is-some (index-of? from-statuses (get status facility))) ERR-INVALID-FACILITY-STATUS)
    (map-set facilities facility-id (merge facility { status: to-status, verifier: (some tx-sender) }))
    (emit-facility kind facility-id reason)))

(define-public (approve-facility (facility-id uint))
  (decide-facility facility-id (list "pending") "active" "facility-approved" u""))

(define-public (suspend-facility (facility-id uint) (reason (string-utf8 256)))
  (decide-facility facility-id (list "active") "suspended" "facility-suspended" reason))

(define-public (reactivate-facility (facility-id uint) (reason (string-utf8 256)))
  (decide-facility facility-id (list "suspended") "active" "facility-reactivated" reason))

(define-public (terminate-facility (facility-id uint) (reason (string-utf8 256)))
  (decide-facility facility-id (list "pending" "active" "suspended") "terminated" "facility-terminated" reason))

(define-read-only (get-facility (facility-id uint))
  (map-get? facilities facility-id))

(define-read-only (get-last-facility-id)
  (var-get last-facility-id))

;; ---------------------------------------------------------------- reports

(define-private (emit-report (kind (string-ascii 24)) (report-id uint))
  (let ((report (unwrap-panic (map-get? reports report-id))))
    (print (merge { event: kind, report-id: report-id, actor: tx-sender } report))
    (ok report-id)))

(define-public (submit-report (facility-id uint) (period-start uint) (period-end uint) (wh uint) (evidence-hash (buff 32)))
  (let ((facility (unwrap! (map-get? facilities facility-id) ERR-FACILITY-NOT-FOUND))
        (report-id (+ (var-get last-report-id) u1)))
    (try! (assert-not-paused))
    (asserts! (is-eq tx-sender (get owner facility)) ERR-NOT-FACILITY-OWNER)
    (asserts! (is-eq (get status facility) "active") ERR-FACILITY-NOT-ACTIVE)
    (asserts! (< period-start period-end) ERR-INVALID-PERIOD)
    (asserts! (> wh u0) ERR-INVALID-ENERGY)
    (asserts! (<= (* wh u3600) (* (get capacity-w facility) (- period-end period-start))) ERR-ENERGY-EXCEEDS-CAPACITY)
    (asserts! (>= period-start (get last-attested-end facility)) ERR-PERIOD-OVERLAP)
    (map-set reports report-id {
      facility-id: facility-id, period-start: period-start, period-end: period-end, wh: wh,
      evidence-hash: evidence-hash, submitter: tx-sender, verifier: none, revoked-by: none,
      status: "submitted",
      reason: u"", token-id: none, submitted-at: stacks-block-height,
      updated-at: stacks-block-height })
    (var-set last-report-id report-id)
    (emit-report "report-submitted" report-id)))

;; Shared checks of a verifier decision on a report; returns the report and its facility.
(define-private (verifier-report-check (report-id uint) (from-statuses (list 2 (string-ascii 10))))
  (let ((report (unwrap! (map-get? reports report-id) ERR-REPORT-NOT-FOUND))
        (facility (unwrap! (map-get? facilities (get facility-id report)) ERR-FACILITY-NOT-FOUND)))
    (try! (assert-not-paused))
    (asserts! (is-active-verifier tx-sender) ERR-NOT-VERIFIER)
    (asserts! (not (is-eq tx-sender (get owner facility))) ERR-CONFLICT-OF-INTEREST)
    (asserts! (is-some (index-of? from-statuses (get status report))) ERR-INVALID-REPORT-STATUS)
    (ok { report: report, facility: facility })))

(define-public (attest-report (report-id uint))
  (let ((checked (try! (verifier-report-check report-id (list "submitted"))))
        (report (get report checked))
        (facility (get facility checked)))
    (asserts! (is-eq (get status facility) "active") ERR-FACILITY-NOT-ACTIVE)
    ;; The overlap rule: attested periods of a facility strictly follow each other.
    (asserts! (>= (get period-start report) (get last-attested-end facility)) ERR-PERIOD-OVERLAP)
    (map-set facilities (get facility-id report) (merge facility { last-attested-end: (get period-end report) }))
    (map-set reports report-id (merge report {
      status: "attested", verifier: (some tx-sender), updated-at: stacks-block-height }))
    (emit-report "report-attested" report-id)))

(define-public (reject-report (report-id uint) (reason (string-utf8 256)))
  (let ((report (get report (try! (verifier-report-check report-id (list "submitted"))))))
    (map-set reports report-id (merge report {
      status: "rejected", verifier: (some tx-sender), reason: reason, updated-at: stacks-block-height }))
    (emit-report "report-rejected" report-id)))

;; The attesting verifier stays on record; the revoking one is kept beside it.
(define-public (revoke-report (report-id uint) (reason (string-utf8 256)))
  (let ((report (get report (try! (verifier-report-check report-id (list "attested" "minted"))))))
    (map-set reports report-id (merge report {
      status: "revoked", revoked-by: (some tx-sender), reason: reason, updated-at: stacks-block-height }))
    (emit-report "report-revoked" report-id)))

(define-public (withdraw-report (report-id uint))
  (let ((report (unwrap! (map-get? reports report-id) ERR-REPORT-NOT-FOUND)))
    (try! (assert-not-paused))
    (asserts! (is-eq tx-sender (get submitter report)) ERR-NOT-SUBMITTER)
    (asserts! (is-eq (get status report) "submitted") ERR-INVALID-REPORT-STATUS)
    (map-set reports report-id (merge report { status: "withdrawn", updated-at: stacks-block-height }))
    (emit-report "report-withdrawn" report-id)))

;; Called by rec-nft inside `mint`; rec-nft has already checked the report is attested.
(define-public (mark-minted (report-id uint) (token-id uint))
  (let ((report (unwrap! (map-get? reports report-id) ERR-REPORT-NOT-FOUND)))
    (asserts! (is-eq contract-caller MINTER) ERR-NOT-MINTER)
    (asserts! (is-eq (get status report) "attested") ERR-INVALID-REPORT-STATUS)
    (map-set reports report-id (merge report {
      status: "minted", token-id: (some token-id), updated-at: stacks-block-height }))
    (emit-report "report-minted" report-id)))

(define-read-only (get-report (report-id uint))
  (map-get? reports report-id))

(define-read-only (get-last-report-id)
  (var-get last-report-id))

(define-read-only (get-contract-owner)
  (var-get contract-owner))

(define-read-only (get-pending-owner)
  (var-get pending-owner))

(define-read-only (is-paused)
  (var-get paused))
