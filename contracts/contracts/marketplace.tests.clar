;; Rendezvous property and invariant tests for marketplace (appended to the contract by `rv`).
;; Run: npx rv . marketplace invariant --runs=N   and   npx rv . marketplace test --runs=N

;; ---- fixture, executed at deploy. 32 certificates issued through the real verification flow
;; (this contract is the approving verifier because a verifier may not decide on its own
;; facility): the deployer lists six of them (fixed price and auction, STX and sBTC; two
;; auctions end mid-campaign), keeps two, and gives three to each wallet; every account gets sBTC.
;; So random callers own certificates to list and there is always something to buy, bid on and settle.
(define-constant FUZZ-EVIDENCE 0x0000000000000000000000000000000000000000000000000000000000000002)
(define-constant FUZZ-SBTC-GRANT u100000000000)

(define-constant FUZZ-IDS (list
  u1 u2 u3 u4 u5 u6 u7 u8 u9 u10 u11 u12 u13 u14 u15 u16 u17 u18 u19 u20
  u21 u22 u23 u24 u25 u26 u27 u28 u29 u30 u31 u32 u33 u34 u35 u36 u37 u38 u39 u40
  u41 u42 u43 u44 u45 u46 u47 u48 u49 u50 u51 u52 u53 u54 u55 u56 u57 u58 u59 u60
  u61 u62 u63 u64 u65 u66 u67 u68 u69 u70 u71 u72 u73 u74 u75 u76 u77 u78 u79 u80
  u81 u82 u83 u84 u85 u86 u87 u88 u89 u90 u91 u92 u93 u94 u95 u96 u97 u98 u99 u100
  u101 u102 u103 u104 u105 u106 u107 u108 u109 u110 u111 u112 u113 u114 u115 u116 u117 u118 u119 u120
  u121 u122 u123 u124 u125 u126 u127 u128 u129 u130 u131 u132 u133 u134 u135 u136 u137 u138 u139 u140
  u141 u142 u143 u144 u145 u146 u147 u148 u149 u150 u151 u152 u153 u154 u155 u156 u157 u158 u159 u160
  u161 u162 u163 u164 u165 u166 u167 u168 u169 u170 u171 u172 u173 u174 u175 u176 u177 u178 u179 u180
  u181 u182 u183 u184 u185 u186 u187 u188 u189 u190 u191 u192 u193 u194 u195 u196 u197 u198 u199 u200))

;; The fixture's certificates; no call in these campaigns can split one into new tokens.
(define-constant FUZZ-TOKEN-IDS (unwrap-panic (slice? FUZZ-IDS u0 u32)))

(define-constant FUZZ-WALLETS (list
  'ST1SJ3DTE5DN7X54YDH5D64R3BCB6A2AG2ZQ8YPD5
  'ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG
  'ST2JHG361ZXG51QTKY2NQCVBPPRRE2KZB1HR05NNC
  'ST2NEB84ASENDXKYGJPQW86YXQCEFEX2ZQPG87ND
  'ST2REHHS5J3CERCRBEPMGH7921Q6PYKAADT7JP2VB
  'ST3AM1A56AK2C1XAFJ4115ZSV26EB49BVQ10MGCS0
  'ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ
  'ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP))

(define-constant FUZZ-GIFTS (list
  { token-id: u9, to: 'ST1SJ3DTE5DN7X54YDH5D64R3BCB6A2AG2ZQ8YPD5 }
  { token-id: u10, to: 'ST1SJ3DTE5DN7X54YDH5D64R3BCB6A2AG2ZQ8YPD5 }
  { token-id: u11, to: 'ST1SJ3DTE5DN7X54YDH5D64R3BCB6A2AG2ZQ8YPD5 }
  { token-id: u12, to: 'ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG }
  { token-id: u13, to: 'ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG }
  { token-id: u14, to: 'ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG }
  { token-id: u15, to: 'ST2JHG361ZXG51QTKY2NQCVBPPRRE2KZB1HR05NNC }
  { token-id: u16, to: 'ST2JHG361ZXG51QTKY2NQCVBPPRRE2KZB1HR05NNC }
  { token-id: u17, to: 'ST2JHG361ZXG51QTKY2NQCVBPPRRE2KZB1HR05NNC }
  { token-id: u18, to: 'ST2NEB84ASENDXKYGJPQW86YXQCEFEX2ZQPG87ND }
  { token-id: u19, to: 'ST2NEB84ASENDXKYGJPQW86YXQCEFEX2ZQPG87ND }
  { token-id: u20, to: 'ST2NEB84ASENDXKYGJPQW86YXQCEFEX2ZQPG87ND }
  { token-id: u21, to: 'ST2REHHS5J3CERCRBEPMGH7921Q6PYKAADT7JP2VB }
  { token-id: u22, to: 'ST2REHHS5J3CERCRBEPMGH7921Q6PYKAADT7JP2VB }
  { token-id: u23, to: 'ST2REHHS5J3CERCRBEPMGH7921Q6PYKAADT7JP2VB }
  { token-id: u24, to: 'ST3AM1A56AK2C1XAFJ4115ZSV26EB49BVQ10MGCS0 }
  { token-id: u25, to: 'ST3AM1A56AK2C1XAFJ4115ZSV26EB49BVQ10MGCS0 }
  { token-id: u26, to: 'ST3AM1A56AK2C1XAFJ4115ZSV26EB49BVQ10MGCS0 }
  { token-id: u27, to: 'ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ }
  { token-id: u28, to: 'ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ }
  { token-id: u29, to: 'ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ }
  { token-id: u30, to: 'ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP }
  { token-id: u31, to: 'ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP }
  { token-id: u32, to: 'ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP }))

(define-private (fuzz-issue (hour uint) (acc (response bool uint)))
  (begin
    (try! acc)
    (let ((report-id (try! (contract-call? .verification submit-report u1 (* hour u3600) (* (+ hour u1) u3600) u1000 FUZZ-EVIDENCE))))
      (try! (as-contract (contract-call? .verification attest-report report-id)))
      (try! (contract-call? .rec-nft mint report-id "ipfs://fuzz"))
      (ok true))))

(define-private (fuzz-gift (gift { token-id: uint, to: principal }) (acc (response bool uint)))
  (begin
    (try! acc)
    (contract-call? .rec-nft transfer (get token-id gift) tx-sender (get to gift))))

(define-private (fuzz-grant-sbtc (who principal) (acc (response bool uint)))
  (begin
    (try! acc)
    (contract-call? .sbtc-token mint FUZZ-SBTC-GRANT who)))

(define-private (fuzz-fixture)
  (let ((far (+ stacks-block-height u1000000)))
    (try! (contract-call? .verification add-verifier (as-contract tx-sender) u"fuzz verifier"))
    (try! (contract-call? .verification register-facility u"Fuzz Farm" "US" "US-TX" "US-ERCOT" "ERCOT"
            0 0 "ES100" "TC110" u1000000000 u1 none false "" "" "ipfs://facility"))
    (try! (as-contract (contract-call? .verification approve-facility u1)))
    (try! (fold fuzz-issue (list u0 u1 u2 u3 u4 u5 u6 u7 u8 u9 u10 u11 u12 u13 u14 u15
                                 u16 u17 u18 u19 u20 u21 u22 u23 u24 u25 u26 u27 u28 u29 u30 u31)
                (ok true)))
    (try! (fold fuzz-gift FUZZ-GIFTS (ok true)))
    (try! (fold fuzz-grant-sbtc FUZZ-WALLETS (contract-call? .sbtc-token mint FUZZ-SBTC-GRANT tx-sender)))
    (try! (list-fixed u1 none u400000 far))
    (try! (list-fixed u2 none u7 far))
    (try! (list-fixed u3 (some .sbtc-token) u250000 far))
    (try! (create-auction u4 none u1000 u5000 u100 far))
    (try! (create-auction u5 none u1 u1 u1 (+ stacks-block-height u5000)))
    (create-auction u6 (some .sbtc-token) u3000 u3000 u10 (+ stacks-block-height u20000))))

;; ---- pickers: aim random seeds at listings and tokens that the call can actually act on.
(define-constant PICK-BUYABLE u0)      ;; active fixed price, not ended, seller is not the caller
(define-constant PICK-BIDDABLE u1)     ;; active auction, not ended, seller is not the caller
(define-constant PICK-SETTLEABLE u2)   ;; active auction, ended
(define-constant PICK-EXPIRABLE u3)    ;; active fixed price, ended
(define-constant PICK-CANCELLABLE u4)  ;; active, the caller's, no bids

(define-private (pick-matches (mode uint) (l { kind: (string-ascii 12), token-id: uint, seller: principal, currency: (optional principal), price: uint, reserve-price: uint, min-increment: uint, start-height: uint, end-height: uint, status: (string-ascii 10), highest-bidder: (optional principal), highest-bid: uint, bid-count: uint }))
  (let ((fixed (is-eq (get kind l) "fixed-price"))
        (open (< stacks-block-height (get end-height l)))
        (mine (is-eq (get seller l) tx-sender)))
    (and (is-eq (get status l) "active")
         (if (is-eq mode PICK-BUYABLE) (and fixed open (not mine))
         (if (is-eq mode PICK-BIDDABLE) (and (not fixed) open (not mine))
         (if (is-eq mode PICK-SETTLEABLE) (and (not fixed) (not open))
         (if (is-eq mode PICK-EXPIRABLE) (and fixed (not open))
         (and mine (is-none (get highest-bidder l))))))))))

(define-private (pick-listing-step (id uint) (acc { mode: uint, start: uint, first: uint, found: uint }))
  (if (or (> (get found acc) u0) (> id (var-get last-listing-id)))
    acc
    (match (map-get? listings id)
      l (if (pick-matches (get mode acc) l)
          (if (>= id (get start acc))
            (merge acc { found: id })
            (if (is-eq (get first acc) u0) (merge acc { first: id }) acc))
          acc)
      acc)))

;; The first listing matching mode at or after a seeded id, wrapping around to the first one
;; overall; u0 (no such listing) when none matches.
(define-private (pick-listing (mode uint) (seed uint))
  (let ((r (fold pick-listing-step FUZZ-IDS
                 { mode: mode, start: (+ u1 (mod seed (+ u1 (var-get last-listing-id)))), first: u0, found: u0 })))
    (if (> (get found r) u0) (get found r) (get first r))))

(define-private (pick-token-step (id uint) (acc { target: uint, count: uint, found: uint }))
  (if (and (is-eq (unwrap-panic (contract-call? .rec-nft get-owner id)) (some tx-sender))
           (is-eq (contract-call? .rec-nft get-status id) (some "active")))
    (merge acc { count: (+ (get count acc) u1),
                 found: (if (is-eq (get count acc) (get target acc)) id (get found acc)) })
    acc))

;; One of the caller's active certificates, or u0 (no such token) when it has none.
(define-private (fuzz-token (seed uint))
  (let ((n (get count (fold pick-token-step FUZZ-TOKEN-IDS { target: u0, count: u0, found: u0 }))))
    (if (is-eq n u0) u0
      (get found (fold pick-token-step FUZZ-TOKEN-IDS { target: (mod seed n), count: u0, found: u0 })))))

(define-private (fuzz-currency (sbtc bool))
  (if sbtc (some .sbtc-token) none))

(define-private (listing-currency (id uint))
  (default-to none (get currency (map-get? listings id))))

(define-private (fuzz-balance (currency (optional principal)) (who principal))
  (if (is-some currency)
    (unwrap-panic (contract-call? .sbtc-token get-balance who))
    (stx-get-balance who)))

;; ---- actions the invariant campaign draws from (besides the contract's own functions).
;; Durations reach past the burn blocks Rendezvous mines between runs, so some listings stay
;; open across runs and others end and wait to be settled or expired.
(define-public (fuzz-list (seed uint) (price uint) (blocks uint) (sbtc bool))
  (list-fixed (fuzz-token seed) (fuzz-currency sbtc) (+ u1 (mod price u1000000))
              (+ stacks-block-height u1 (mod blocks u2000))))

(define-public (fuzz-auction (seed uint) (price uint) (increment uint) (blocks uint) (sbtc bool))
  (let ((start (+ u1 (mod price u1000))))
    (create-auction (fuzz-token seed) (fuzz-currency sbtc) start (+ start (mod (/ price u1000) u500))
                    (+ u1 (mod increment u100)) (+ stacks-block-height u1 (mod blocks u2000)))))

(define-private (buy-in (id uint))
  (if (is-some (listing-currency id)) (buy id (some .sbtc-token)) (buy id none)))

(define-public (fuzz-buy (seed uint))
  (buy-in (pick-listing PICK-BUYABLE seed)))

(define-public (fuzz-buy-and-retire (seed uint))
  (let ((id (pick-listing PICK-BUYABLE seed)))
    (if (is-some (listing-currency id))
      (buy-and-retire id (some .sbtc-token) u"Fuzz Beneficiary" none "US" "" "US-ERCOT" u1 u2 u2024 "fuzz")
      (buy-and-retire id none u"Fuzz Beneficiary" none "US" "" "US-ERCOT" u1 u2 u2024 "fuzz"))))

;; The lowest acceptable bid for an auction plus extra.
(define-private (bid-amount (id uint) (extra uint))
  (match (map-get? listings id)
    l (+ (if (is-some (get highest-bidder l)) (+ (get highest-bid l) (get min-increment l)) (get price l))
         (mod extra u1000))
    u0))

(define-private (bid-in (id uint) (amount uint))
  (if (is-some (listing-currency id)) (place-bid id amount (some .sbtc-token)) (place-bid id amount none)))

(define-public (fuzz-bid (seed uint) (extra uint))
  (let ((id (pick-listing PICK-BIDDABLE seed)))
    (bid-in id (bid-amount id extra))))

(define-private (settle-in (id uint))
  (if (is-some (listing-currency id)) (settle-auction id (some .sbtc-token)) (settle-auction id none)))

(define-public (fuzz-cancel (seed uint)) (cancel-listing (pick-listing PICK-CANCELLABLE seed)))
(define-public (fuzz-expire (seed uint)) (expire-listing (pick-listing PICK-EXPIRABLE seed)))
(define-public (fuzz-settle (seed uint)) (settle-in (pick-listing PICK-SETTLEABLE seed)))

(unwrap-panic (fuzz-fixture))

;; ---- invariants
(define-private (escrow-step (id uint) (acc { active: uint, stx-bids: uint, sbtc-bids: uint, ok: bool }))
  (match (map-get? listings id)
    l (if (is-eq (get status l) "active")
        { active: (+ (get active acc) u1),
          stx-bids: (+ (get stx-bids acc) (if (is-none (get currency l)) (get highest-bid l) u0)),
          sbtc-bids: (+ (get sbtc-bids acc) (if (is-eq (get currency l) (some .sbtc-token)) (get highest-bid l) u0)),
          ok: (and (get ok acc)
                   (is-eq (unwrap-panic (contract-call? .rec-nft get-owner (get token-id l))) (some (as-contract tx-sender)))) }
        ;; a closed listing's token has left the marketplace unless it was listed again
        acc)
    acc))

;; Every active listing's token is held by the marketplace, the marketplace holds nothing else,
;; and the STX and sBTC it holds equal the highest bids of open auctions in each currency
;; (escrowed bids, nothing lost).
(define-read-only (invariant-escrow-matches-listings)
  (or (> (var-get last-listing-id) (len FUZZ-IDS))
      (let ((r (fold escrow-step FUZZ-IDS { active: u0, stx-bids: u0, sbtc-bids: u0, ok: true })))
        (and (get ok r)
             (is-eq (get active r) (contract-call? .rec-nft get-escrowed-count))
             (is-eq (get stx-bids r) (stx-get-balance (as-contract tx-sender)))
             (is-eq (get sbtc-bids r) (fuzz-balance (some .sbtc-token) (as-contract tx-sender)))))))

(define-private (sold-step (id uint) (ok-so-far bool))
  (and ok-so-far
    (match (map-get? listings id)
      l (if (is-eq (get status l) "active") true
          (not (is-eq (contract-call? .rec-nft get-status (get token-id l)) (some "split"))))
      true)))

;; No listed certificate was ever split while escrowed.
(define-read-only (invariant-listed-never-split)
  (fold sold-step FUZZ-IDS true))

;; ---- property tests. State carries over between runs, so the sequences chain: listings are
;; bought and the buyer lists the certificate again, auctions are bid on, end and are settled.
(define-public (test-fee-arithmetic (price uint))
  (let ((p (mod price u1000000000000000))
        (q (quote-fee p)))
    (asserts! (is-eq (+ (get fee q) (get seller-proceeds q)) p) (err u9100))
    (asserts! (<= (* (get fee q) BPS-DENOMINATOR) (* p MAX-FEE-BPS)) (err u9101))
    (ok true)))

(define-read-only (can-test-list-then-cancel-returns-token (seed uint) (price uint))
  (and (> (fuzz-token seed) u0) (not (var-get paused))))

(define-public (test-list-then-cancel-returns-token (seed uint) (price uint))
  (let ((token-id (fuzz-token seed))
        (listing-id (try! (list-fixed token-id none (+ u1 (mod price u1000)) (+ stacks-block-height u10)))))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some (as-contract tx-sender))) (err u9110))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "listed")) (err u9111))
    (try! (cancel-listing listing-id))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some tx-sender)) (err u9112))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "active")) (err u9113))
    (ok true)))

;; The balance `who` should have after a payment where the payer paid `paid`, the seller got
;; `proceeds` and the treasury `fee` (one principal may hold several of these roles).
(define-private (expected-balance (before uint) (who principal) (payer principal) (paid uint)
                                  (seller principal) (proceeds uint) (fee uint))
  (- (+ before (if (is-eq who seller) proceeds u0) (if (is-eq who (var-get treasury)) fee u0))
     (if (is-eq who payer) paid u0)))

(define-read-only (can-test-buy-pays-seller-and-treasury (seed uint) (price uint) (blocks uint))
  (and (> (pick-listing PICK-BUYABLE seed) u0) (not (var-get paused))))

;; Buy a fixed-price listing: the buyer pays the price, the treasury gets the fee, the seller the
;; rest (fee + proceeds = price), the token ends with the buyer; then the buyer lists it again at
;; a fuzzed price so later buyers find it.
(define-public (test-buy-pays-seller-and-treasury (seed uint) (price uint) (blocks uint))
  (let ((id (pick-listing PICK-BUYABLE seed))
        (l (unwrap! (map-get? listings id) (err u9120)))
        (currency (get currency l))
        (seller (get seller l))
        (buyer tx-sender)
        (fee-to (var-get treasury))
        (q (quote-fee (get price l)))
        (buyer-before (fuzz-balance currency buyer))
        (seller-before (fuzz-balance currency seller))
        (treasury-before (fuzz-balance currency fee-to))
        (market-before (fuzz-balance currency (as-contract tx-sender)))
        (escrowed-before (contract-call? .rec-nft get-escrowed-count))
        (token-id (try! (buy-in id))))
    (asserts! (is-eq (+ (get fee q) (get seller-proceeds q)) (get price l)) (err u9121))
    (asserts! (is-eq token-id (get token-id l)) (err u9122))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some buyer)) (err u9123))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "active")) (err u9124))
    (asserts! (is-eq (get status (map-get? listings id)) (some "sold")) (err u9125))
    (asserts! (is-eq (contract-call? .rec-nft get-escrowed-count) (- escrowed-before u1)) (err u9126))
    (asserts! (is-eq (fuzz-balance currency buyer)
                     (expected-balance buyer-before buyer buyer (get price l) seller (get seller-proceeds q) (get fee q))) (err u9127))
    (asserts! (is-eq (fuzz-balance currency seller)
                     (expected-balance seller-before seller buyer (get price l) seller (get seller-proceeds q) (get fee q))) (err u9128))
    (asserts! (is-eq (fuzz-balance currency fee-to)
                     (expected-balance treasury-before fee-to buyer (get price l) seller (get seller-proceeds q) (get fee q))) (err u9129))
    (asserts! (is-eq (fuzz-balance currency (as-contract tx-sender)) market-before) (err u9130))
    (let ((relisted (try! (list-fixed token-id currency (+ u1 (mod price u1000000))
                                      (+ stacks-block-height u1 (mod blocks u20000))))))
      (asserts! (is-eq (get token-id (map-get? listings relisted)) (some token-id)) (err u9131))
      (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "listed")) (err u9132))
      (ok true))))

(define-read-only (can-test-bid-escrows-and-refunds (seed uint) (extra uint))
  (and (> (pick-listing PICK-BIDDABLE seed) u0) (not (var-get paused))))

;; Bid on an auction: the bid moves into escrow and the previous highest bid goes back to its
;; bidder exactly, so the marketplace holds only the current highest bid.
(define-public (test-bid-escrows-and-refunds (seed uint) (extra uint))
  (let ((id (pick-listing PICK-BIDDABLE seed))
        (l (unwrap! (map-get? listings id) (err u9140)))
        (currency (get currency l))
        (amount (bid-amount id extra))
        (previous (get highest-bid l))
        (previous-bidder (default-to tx-sender (get highest-bidder l)))
        (bidder-before (fuzz-balance currency tx-sender))
        (previous-before (fuzz-balance currency previous-bidder))
        (market-before (fuzz-balance currency (as-contract tx-sender))))
    (try! (bid-in id amount))
    (asserts! (is-eq (fuzz-balance currency (as-contract tx-sender)) (- (+ market-before amount) previous)) (err u9141))
    (asserts! (is-eq (fuzz-balance currency tx-sender)
                     (- (+ bidder-before (if (is-eq previous-bidder tx-sender) previous u0)) amount)) (err u9142))
    (asserts! (or (is-eq previous-bidder tx-sender)
                  (is-eq (fuzz-balance currency previous-bidder) (+ previous-before previous))) (err u9143))
    (asserts! (is-eq (map-get? listings id)
                     (some (merge l { highest-bidder: (some tx-sender), highest-bid: amount,
                                      bid-count: (+ (get bid-count l) u1) }))) (err u9144))
    (ok true)))

(define-read-only (can-test-settle-pays-out (seed uint))
  (> (pick-listing PICK-SETTLEABLE seed) u0))

;; Settle an ended auction: a winning bid at or above the reserve pays fee and proceeds out of
;; escrow and hands the token to the winner; otherwise the bid is refunded exactly and the token
;; goes back to the seller. The escrow gives up exactly the highest bid either way.
(define-public (test-settle-pays-out (seed uint))
  (let ((id (pick-listing PICK-SETTLEABLE seed))
        (l (unwrap! (map-get? listings id) (err u9150)))
        (currency (get currency l))
        (seller (get seller l))
        (amount (get highest-bid l))
        (bidder (get highest-bidder l))
        (winner (default-to seller bidder))
        (sold (and (is-some bidder) (>= amount (get reserve-price l))))
        (q (quote-fee amount))
        (fee-to (var-get treasury))
        (market (as-contract tx-sender))
        (seller-before (fuzz-balance currency seller))
        (winner-before (fuzz-balance currency winner))
        (treasury-before (fuzz-balance currency fee-to))
        (market-before (fuzz-balance currency market)))
    (try! (settle-in id))
    (asserts! (is-eq (fuzz-balance currency market) (- market-before amount)) (err u9151))
    (if sold
      (begin
        (asserts! (is-eq (+ (get fee q) (get seller-proceeds q)) amount) (err u9152))
        (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner (get token-id l))) (some winner)) (err u9153))
        (asserts! (is-eq (get status (map-get? listings id)) (some "sold")) (err u9154))
        (asserts! (is-eq (fuzz-balance currency seller)
                         (expected-balance seller-before seller market amount seller (get seller-proceeds q) (get fee q))) (err u9155))
        (asserts! (is-eq (fuzz-balance currency winner)
                         (expected-balance winner-before winner market amount seller (get seller-proceeds q) (get fee q))) (err u9156))
        (asserts! (is-eq (fuzz-balance currency fee-to)
                         (expected-balance treasury-before fee-to market amount seller (get seller-proceeds q) (get fee q))) (err u9157)))
      (begin
        (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner (get token-id l))) (some seller)) (err u9158))
        (asserts! (is-eq (get status (map-get? listings id)) (some "expired")) (err u9159))
        (asserts! (is-eq (fuzz-balance currency winner) (+ winner-before amount)) (err u9160))))
    (asserts! (is-eq (contract-call? .rec-nft get-status (get token-id l)) (some "active")) (err u9161))
    (ok true)))

(define-read-only (can-test-expire-returns-token (seed uint))
  (> (pick-listing PICK-EXPIRABLE seed) u0))

;; An ended fixed-price listing can be expired by anyone and the token goes back to the seller.
(define-public (test-expire-returns-token (seed uint))
  (let ((id (pick-listing PICK-EXPIRABLE seed))
        (l (unwrap! (map-get? listings id) (err u9170))))
    (try! (expire-listing id))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner (get token-id l))) (some (get seller l))) (err u9171))
    (asserts! (is-eq (contract-call? .rec-nft get-status (get token-id l)) (some "active")) (err u9172))
    (ok true)))

(define-read-only (can-test-list-own-token (seed uint) (price uint) (increment uint) (blocks uint) (sbtc bool) (auction bool))
  (and (> (fuzz-token seed) u0) (not (var-get paused))))

;; The caller lists one of its certificates at a fuzzed price, as an auction or at a fixed price
;; (open longer, so buyers find it); the token moves into escrow.
(define-public (test-list-own-token (seed uint) (price uint) (increment uint) (blocks uint) (sbtc bool) (auction bool))
  (let ((token-id (fuzz-token seed))
        (escrowed-before (contract-call? .rec-nft get-escrowed-count))
        (id (try! (if auction
                    (fuzz-auction seed price increment blocks sbtc)
                    (list-fixed token-id (fuzz-currency sbtc) (+ u1 (mod price u1000000))
                                (+ stacks-block-height u1 (mod blocks u20000)))))))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some (as-contract tx-sender))) (err u9180))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "listed")) (err u9181))
    (asserts! (is-eq (contract-call? .rec-nft get-escrowed-count) (+ escrowed-before u1)) (err u9182))
    (asserts! (is-eq (map-get? listings id)
                     (some { kind: (if auction "auction" "fixed-price"), token-id: token-id, seller: tx-sender,
                             currency: (fuzz-currency sbtc), price: (get price (unwrap-panic (map-get? listings id))),
                             reserve-price: (get reserve-price (unwrap-panic (map-get? listings id))),
                             min-increment: (get min-increment (unwrap-panic (map-get? listings id))),
                             start-height: stacks-block-height,
                             end-height: (get end-height (unwrap-panic (map-get? listings id))),
                             status: "active", highest-bidder: none, highest-bid: u0, bid-count: u0 })) (err u9183))
    (ok true)))
